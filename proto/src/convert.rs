//! The one place where generated protobuf types meet the engine's types.

use std::collections::BTreeMap;

use crate::v1 as pb;

use purposegate_engine::{
    self as engine, Decision, Deidentification, Evaluation, InvalidRequest, Policy,
};

/// Converts a `CheckRequest` into the engine's request, checking every
/// field the engine cannot be asked without. `prefix` names the request
/// inside a batch (`requests[3].`).
pub fn request(
    req: pb::CheckRequest,
    prefix: &str,
) -> Result<engine::DecisionRequest, InvalidRequest> {
    checked(req, prefix, engine::DecisionRequest::validate)
}

/// Converts the `CheckRequest` of `PermittedPurposes`: every field as
/// [`request`] checks it, but the purpose, which must be left empty.
pub fn purposes_request(
    req: pb::CheckRequest,
    prefix: &str,
) -> Result<engine::DecisionRequest, InvalidRequest> {
    checked(
        req,
        prefix,
        engine::DecisionRequest::validate_without_purpose,
    )
}

fn checked(
    req: pb::CheckRequest,
    prefix: &str,
    validate: fn(&engine::DecisionRequest) -> Result<(), InvalidRequest>,
) -> Result<engine::DecisionRequest, InvalidRequest> {
    let subject = req.subject.unwrap_or_default();
    let resource = req.resource.unwrap_or_default();
    let context = req.context.unwrap_or_default();
    let deidentification =
        deidentification(resource.deidentification).ok_or_else(|| InvalidRequest {
            field: format!("{prefix}resource.deidentification"),
            problem: format!("has unknown value {}", resource.deidentification),
        })?;
    let request = engine::DecisionRequest {
        subject: engine::Subject {
            id: subject.id,
            tenant: subject.tenant,
            roles: subject.roles,
        },
        resource: engine::Resource {
            category: resource.category,
            owner_tenant: resource.owner_tenant,
            data_subject: resource.data_subject,
            deidentification,
            group_size: (resource.group_size != 0).then_some(resource.group_size),
            origin: resource.origin,
            attributes: resource.attributes.into_iter().collect::<BTreeMap<_, _>>(),
        },
        purpose: req.purpose,
        action: req.action,
        context: engine::Context {
            customer_instruction: context.customer_instruction,
            attributes: context.attributes.into_iter().collect::<BTreeMap<_, _>>(),
        },
        supported_obligations: req.supported_obligations,
        request_id: req.request_id,
        inherited_purpose: req.inherited_purpose,
    };
    validate(&request).map_err(|mut e| {
        e.field = format!("{prefix}{}", e.field);
        e
    })?;
    Ok(request)
}

/// The protobuf number of a de-identification state (the inverse of
/// [`deidentification`]).
pub fn deidentification_number(state: Deidentification) -> i32 {
    let named = match state {
        Deidentification::Identified => pb::Deidentification::Identified,
        Deidentification::Pseudonymized => pb::Deidentification::Pseudonymized,
        Deidentification::UnlinkedPseudonymized => pb::Deidentification::UnlinkedPseudonymized,
        Deidentification::Anonymized => pb::Deidentification::Anonymized,
        Deidentification::Aggregated => pb::Deidentification::Aggregated,
    };
    named.into()
}

/// `Some(None)` for unspecified, `None` for a number no state has.
fn deidentification(value: i32) -> Option<Option<Deidentification>> {
    match pb::Deidentification::try_from(value).ok()? {
        pb::Deidentification::Unspecified => Some(None),
        pb::Deidentification::Identified => Some(Some(Deidentification::Identified)),
        pb::Deidentification::Pseudonymized => Some(Some(Deidentification::Pseudonymized)),
        pb::Deidentification::UnlinkedPseudonymized => {
            Some(Some(Deidentification::UnlinkedPseudonymized))
        }
        pb::Deidentification::Anonymized => Some(Some(Deidentification::Anonymized)),
        pb::Deidentification::Aggregated => Some(Some(Deidentification::Aggregated)),
    }
}

pub fn decision(d: Decision) -> pb::Decision {
    match d {
        Decision::Permit => pb::Decision::Permit,
        Decision::Deny => pb::Decision::Deny,
        Decision::NotApplicable => pb::Decision::NotApplicable,
        Decision::Indeterminate => pb::Decision::Indeterminate,
    }
}

fn obligation(o: &engine::Obligation) -> pb::Obligation {
    pb::Obligation {
        id: o.id.to_string(),
        params: o
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

pub fn response(e: Evaluation) -> pb::CheckResponse {
    let reason = e.reason.to_string();
    response_with_reason(e, reason)
}

/// [`response`] with the reason already put into words (by a caller that
/// needs the words for something else too, and so writes them once).
pub fn response_with_reason(e: Evaluation, reason: String) -> pb::CheckResponse {
    let choices_revision = e.choices_revision();
    pb::CheckResponse {
        decision: decision(e.decision).into(),
        obligations: e.obligations.iter().map(obligation).collect(),
        rule_ids: e.rule_ids.iter().map(ToString::to_string).collect(),
        reason,
        policy_revision: e.policy_revision.to_string(),
        ttl_seconds: e.ttl_seconds,
        request_id: e.request_id,
        monitor: e.monitor.map(|m| pb::MonitorResult {
            decision: decision(m.decision).into(),
            rule_ids: m.rule_ids.iter().map(ToString::to_string).collect(),
        }),
        purpose_context: String::new(),
        choices_revision,
        watched_ttl_seconds: e.watched_ttl_seconds,
    }
}

/// The answer to the reverse question.
pub fn permitted_purposes(answer: engine::PermittedPurposes) -> pb::PermittedPurposesResponse {
    pb::PermittedPurposesResponse {
        purposes: answer
            .purposes
            .into_iter()
            .map(|p| pb::PermittedPurpose {
                purpose: p.purpose.to_string(),
                rule_ids: p.rule_ids.iter().map(ToString::to_string).collect(),
                obligations: p.obligations.iter().map(obligation).collect(),
            })
            .collect(),
        policy_revision: answer.policy_revision.to_string(),
        ttl_seconds: answer.ttl_seconds,
        request_id: answer.request_id,
    }
}

pub fn revision(policy: &Policy) -> pb::PolicyRevision {
    pb::PolicyRevision {
        revision: policy.revision().to_string(),
        name: policy.name().to_string(),
        purpose_context_keys: Vec::new(),
    }
}

/// The serving policy described for `GetPolicy`.
pub fn policy_info(policy: &Policy, last_reload_error: String) -> pb::PolicyInfo {
    let purposes = policy.purposes();
    let categories = policy.categories();
    pb::PolicyInfo {
        name: policy.name().to_string(),
        revision: policy.revision().to_string(),
        purposes: purposes
            .roots()
            .filter_map(|r| {
                tree_node(purposes, r, &|id, description, children| pb::PurposeNode {
                    id,
                    description,
                    children,
                })
            })
            .collect(),
        data_categories: categories
            .roots()
            .filter_map(|r| {
                tree_node(categories, r, &|id, description, children| {
                    pb::CategoryNode {
                        id,
                        description,
                        children,
                    }
                })
            })
            .collect(),
        last_reload_error,
        rules: policy
            .rules()
            .iter()
            .map(|r| pb::RuleInfo {
                id: r.id.to_string(),
                description: r.description.clone(),
                effect: r.effect.as_str().to_string(),
                purposes: r.purposes.iter().map(ToString::to_string).collect(),
                data_categories: r.data_categories.iter().map(ToString::to_string).collect(),
                mode: r.mode.as_str().to_string(),
                when: r
                    .when
                    .as_ref()
                    .map(engine::Condition::describe)
                    .unwrap_or_default(),
                unless: r
                    .unless
                    .as_ref()
                    .map(engine::Condition::describe)
                    .unwrap_or_default(),
                obligations: r.obligations.iter().map(obligation).collect(),
            })
            .collect(),
        claims: policy
            .claims()
            .unwrap_or_default()
            .iter()
            .map(|c| pb::ClaimInfo {
                id: c.id.to_string(),
                subjects: c.subjects.clone(),
                purposes: c.purposes.iter().map(ToString::to_string).collect(),
            })
            .collect(),
        purpose_context_keys: Vec::new(),
    }
}

/// A taxonomy node and everything below it, built with `make`.
fn tree_node<T>(
    tree: &engine::Taxonomy,
    idx: engine::NodeIdx,
    make: &impl Fn(String, String, Vec<T>) -> T,
) -> Option<T> {
    let node = tree.node(idx)?;
    let children = node
        .children
        .iter()
        .filter_map(|&c| tree_node(tree, c, make))
        .collect();
    Some(make(
        node.id.to_string(),
        node.description.clone(),
        children,
    ))
}
