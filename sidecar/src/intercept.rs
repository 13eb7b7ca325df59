//! From an intercepted call to a judgement, the same for the proxy and for
//! Envoy's ext_authz: match the call to a route, build the `CheckRequest`
//! from the route and the `x-*` headers, ask the gate, and decide whether
//! the call goes through. Only an enforced PERMIT does, unless `--dry-run`.

use opentelemetry::Context;
use purposegate_proto::v1 as pb;
use tracing::info;

use crate::gate::{Gate, Verdict};
use crate::routes::Routes;

/// What the sidecar knows of an intercepted call.
#[allow(
    missing_debug_implementations,
    reason = "holds a header lookup closure, which has nothing to show"
)]
pub struct Call<'a> {
    pub grpc: bool,
    /// Without the query.
    pub path: &'a str,
    pub method: &'a str,
    /// A request header's value, trimmed; empty when absent.
    pub header: &'a (dyn Fn(&str) -> String + Sync),
    /// The caller's subject as its verified certificate names it (empty
    /// if it names none), when the call came over mutual TLS: then
    /// `x-subject` is not believed.
    pub certified_subject: Option<&'a str>,
}

/// Why a call is not let through, before or after asking.
#[derive(Debug, Clone)]
pub struct Denial {
    pub decision: &'static str,
    pub reason: String,
    pub rule_ids: Vec<String>,
    pub revision: String,
}

impl Denial {
    /// Refused before any decision: no purpose, no route, a bad header.
    pub fn refused(reason: String) -> Self {
        Denial {
            decision: "DENY",
            reason,
            rule_ids: Vec::new(),
            revision: String::new(),
        }
    }

    /// The `x-purposegate-*` headers a denied caller gets.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            ("x-purposegate-decision", self.decision.to_string()),
            ("x-purposegate-reason", self.reason.clone()),
            ("x-purposegate-rule-ids", self.rule_ids.join(",")),
            ("x-purposegate-revision", self.revision.clone()),
        ]
    }
}

#[derive(Debug)]
pub enum Judgement {
    LetThrough,
    Deny(Denial),
}

/// Judges one call: refused before asking, denied, permitted, or let
/// through under `--dry-run`. Logs every call that is not permitted.
pub async fn judge(gate: &Gate, routes: &Routes, call: &Call<'_>, parent: &Context) -> Judgement {
    let denial = match check_request(routes, call) {
        Ok(check) => denial_of(gate.decide(check, parent).await),
        Err(denial) => {
            gate.refused(parent, &(call.header)("x-purpose"), &denial.reason);
            Some(denial)
        }
    };
    match denial {
        None => Judgement::LetThrough,
        Some(denial) if gate.dry_run => {
            info!(
                path = call.path,
                decision = denial.decision,
                reason = %denial.reason,
                enforced = false,
                "dry run: a call that would be denied goes through"
            );
            Judgement::LetThrough
        }
        Some(denial) => {
            info!(path = call.path, decision = denial.decision, reason = %denial.reason, "denied");
            Judgement::Deny(denial)
        }
    }
}

/// The question the call asks, from its route and headers.
fn check_request(routes: &Routes, call: &Call<'_>) -> Result<pb::CheckRequest, Denial> {
    let (grpc, path, method, header) = (call.grpc, call.path, call.method, call.header);
    let refuse = Denial::refused;
    let route = if grpc {
        routes.grpc(path)
    } else {
        routes.http(method, path)
    };
    let Some(route) = route else {
        return Err(refuse(format!(
            "no route covers {} `{path}`; calls on no route are denied",
            if grpc { "gRPC method" } else { method }
        )));
    };
    let purpose = header("x-purpose");
    if purpose.is_empty() {
        return Err(refuse(
            "the call states no purpose (header `x-purpose`); it is denied".to_string(),
        ));
    }
    let deidentification = match route.deidentification {
        Some(fixed) => fixed,
        None => match header("x-data-deidentification").as_str() {
            "" => 0,
            name => match purposegate_server::engine::Deidentification::parse(name) {
                Some(state) => purposegate_server::grpc::convert::deidentification_number(state),
                None => {
                    return Err(refuse(format!(
                        "header `x-data-deidentification`: unknown state `{name}`"
                    )));
                }
            },
        },
    };
    let group_size = match header("x-data-group-size").as_str() {
        "" => 0,
        k => k.parse::<u64>().map_err(|_| {
            refuse(format!(
                "header `x-data-group-size`: `{k}` is not a whole number"
            ))
        })?,
    };
    let list = |value: String| -> Vec<String> {
        value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(pb::CheckRequest {
        subject: Some(pb::Subject {
            id: match call.certified_subject {
                Some(certified) => certified.to_string(),
                None => header("x-subject"),
            },
            tenant: header("x-tenant"),
            roles: list(header("x-subject-roles")),
        }),
        resource: Some(pb::Resource {
            category: route.category.clone(),
            owner_tenant: route
                .owner_tenant
                .clone()
                .unwrap_or_else(|| header("x-data-tenant")),
            deidentification,
            group_size,
            origin: list(header("x-data-origin")),
            attributes: route
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        purpose,
        action: if grpc {
            path.rsplit('/').next().unwrap_or("").to_string()
        } else {
            method.to_string()
        },
        context: Some(pb::Context {
            customer_instruction: header("x-customer-instruction"),
            attributes: Default::default(),
        }),
        supported_obligations: list(header("x-supported-obligations")),
        request_id: header("x-request-id"),
    })
}

/// The denial a verdict amounts to, if it is not an enforced PERMIT.
fn denial_of(verdict: Verdict) -> Option<Denial> {
    match verdict.answer {
        Ok(answer) if answer.decision() == pb::Decision::Permit => None,
        Ok(answer) => Some(Denial {
            decision: answer.decision().as_str_name(),
            reason: answer.reason,
            rule_ids: answer.rule_ids,
            revision: answer.policy_revision,
        }),
        Err(status) => Some(Denial::refused(crate::gate::unanswered(&status))),
    }
}
