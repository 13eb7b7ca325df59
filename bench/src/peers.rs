//! The default policy in the engines a user would pick instead: Cedar
//! (`peers/online-services-dpa.cedar`) and Rego via regorus
//! (`peers/online-services-dpa.rego`). Each turns a purposegate request into
//! its own request once, outside the timed part, and answers allow/deny:
//! purposegate's PERMIT is allow, everything else blocks.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression,
};
use purposegate_engine::{DecisionRequest, Deidentification, Policy};

pub const CEDAR_POLICY: &str = include_str!("../peers/online-services-dpa.cedar");
pub const REGO_POLICY: &str = include_str!("../peers/online-services-dpa.rego");

fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    let kind = EntityTypeName::from_str(kind).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(kind, EntityId::new(id)))
}

fn level(d: Deidentification) -> i64 {
    match d {
        Deidentification::Identified => 1,
        Deidentification::Pseudonymized => 2,
        Deidentification::UnlinkedPseudonymized => 3,
        Deidentification::Anonymized => 4,
        Deidentification::Aggregated => 5,
    }
}

/// The categories in play: own, then origins.
fn categories(req: &DecisionRequest) -> Vec<String> {
    std::iter::once(req.resource.category.clone())
        .chain(req.resource.origin.iter().cloned())
        .collect()
}

/// Cedar with the policy's purpose and category trees as entities.
#[derive(Debug)]
pub struct Cedar {
    policies: PolicySet,
    entities: Entities,
    authorizer: Authorizer,
}

impl Cedar {
    pub fn new(policy: &Policy) -> Result<Self, String> {
        let policies = PolicySet::from_str(CEDAR_POLICY).map_err(|e| e.to_string())?;
        let mut entities = Vec::new();
        for (kind, tree) in [
            ("Purpose", policy.purposes()),
            ("DataCategory", policy.categories()),
        ] {
            for (_, node) in tree.nodes() {
                let mut parents = HashSet::new();
                if let Some(parent) = node.parent.and_then(|p| tree.node(p)) {
                    parents.insert(uid(kind, &parent.id)?);
                }
                entities.push(Entity::new_no_attrs(uid(kind, &node.id)?, parents));
            }
        }
        let entities = Entities::from_entities(entities, None).map_err(|e| e.to_string())?;
        Ok(Cedar {
            policies,
            entities,
            authorizer: Authorizer::new(),
        })
    }

    /// The Cedar request for a purposegate request.
    pub fn request(&self, req: &DecisionRequest) -> Result<Request, String> {
        let mut context: Vec<(String, RestrictedExpression)> = vec![
            (
                "purpose".into(),
                RestrictedExpression::new_entity_uid(uid("Purpose", &req.purpose)?),
            ),
            (
                "categories".into(),
                RestrictedExpression::new_set(
                    categories(req)
                        .iter()
                        .map(|c| uid("DataCategory", c).map(RestrictedExpression::new_entity_uid))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            ),
        ];
        if !req.subject.tenant.is_empty() {
            context.push((
                "tenant".into(),
                RestrictedExpression::new_string(req.subject.tenant.clone()),
            ));
        }
        if !req.resource.owner_tenant.is_empty() {
            context.push((
                "owner_tenant".into(),
                RestrictedExpression::new_string(req.resource.owner_tenant.clone()),
            ));
        }
        if let Some(d) = req.resource.deidentification {
            context.push((
                "deidentification".into(),
                RestrictedExpression::new_long(level(d)),
            ));
        }
        if let Some(k) = req.resource.group_size {
            context.push((
                "group_size".into(),
                RestrictedExpression::new_long(i64::try_from(k).unwrap_or(i64::MAX)),
            ));
        }
        if !req.context.customer_instruction.is_empty() {
            context.push((
                "customer_instruction".into(),
                RestrictedExpression::new_bool(true),
            ));
        }
        let context = Context::from_pairs(context).map_err(|e| e.to_string())?;
        Request::new(
            uid("Subject", &req.subject.id)?,
            uid("Action", "process")?,
            uid("Data", "d")?,
            context,
            None,
        )
        .map_err(|e| e.to_string())
    }

    pub fn allows(&self, request: &Request) -> bool {
        self.authorizer
            .is_authorized(request, &self.policies, &self.entities)
            .decision()
            == Decision::Allow
    }
}

/// Rego (regorus) with the declared purposes as data.
#[derive(Debug, Clone)]
pub struct Rego {
    engine: regorus::Engine,
}

impl Rego {
    pub fn new(policy: &Policy) -> Result<Self, String> {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy("online-services-dpa.rego".into(), REGO_POLICY.into())
            .map_err(|e| e.to_string())?;
        let purposes: HashMap<&str, bool> = policy.purposes().ids().map(|p| (p, true)).collect();
        let data = serde_json::json!({ "purposes": purposes }).to_string();
        engine
            .add_data(regorus::Value::from_json_str(&data).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        Ok(Rego { engine })
    }

    /// The Rego input for a purposegate request.
    pub fn input(req: &DecisionRequest) -> Result<regorus::Value, String> {
        let mut input = serde_json::json!({
            "purpose": req.purpose,
            "categories": categories(req),
        });
        let fields = [
            (
                "tenant",
                (!req.subject.tenant.is_empty()).then(|| req.subject.tenant.clone().into()),
            ),
            (
                "owner_tenant",
                (!req.resource.owner_tenant.is_empty())
                    .then(|| req.resource.owner_tenant.clone().into()),
            ),
            (
                "deidentification",
                req.resource.deidentification.map(|d| level(d).into()),
            ),
            ("group_size", req.resource.group_size.map(Into::into)),
            (
                "customer_instruction",
                (!req.context.customer_instruction.is_empty()).then_some(true.into()),
            ),
        ];
        for (key, value) in fields {
            if let (Some(value), Some(map)) = (value, input.as_object_mut()) {
                map.insert(key.to_string(), value);
            }
        }
        regorus::Value::from_json_str(&input.to_string()).map_err(|e| e.to_string())
    }

    pub fn allows(&mut self, input: &regorus::Value) -> Result<bool, String> {
        self.engine.set_input(input.clone());
        let value = self
            .engine
            .eval_rule("data.purposegate.allow".into())
            .map_err(|e| e.to_string())?;
        Ok(value == regorus::Value::from(true))
    }
}

/// How many of `requests` purposegate permits, after checking that Cedar and
/// Rego decide every one of them the same way and that every rule of the
/// policy is reached. The first disagreement is an error naming it.
pub fn agreement(policy: &Policy, requests: &[DecisionRequest]) -> Result<usize, String> {
    let cedar = Cedar::new(policy)?;
    let mut rego = Rego::new(policy)?;
    let mut rules_seen = std::collections::BTreeSet::new();
    let mut permits = 0;
    for (i, req) in requests.iter().enumerate() {
        let answer = policy.evaluate(req);
        rules_seen.extend(answer.rule_ids.iter().map(ToString::to_string));
        let ours = answer.decision == purposegate_engine::Decision::Permit;
        let cedar_allows = cedar.allows(&cedar.request(req)?);
        let rego_allows = rego.allows(&Rego::input(req)?)?;
        if ours != cedar_allows || ours != rego_allows {
            let word = |allow: bool| if allow { "allow" } else { "deny" };
            return Err(format!(
                "request {i} is decided differently: purposegate {} ({}), Cedar {}, Rego {}\n{req:?}",
                answer.decision,
                answer.reason,
                word(cedar_allows),
                word(rego_allows),
            ));
        }
        permits += usize::from(ours);
    }
    let missing: Vec<String> = policy
        .rules()
        .iter()
        .map(|r| r.id.to_string())
        .filter(|id| !rules_seen.contains(id))
        .collect();
    if missing.is_empty() {
        Ok(permits)
    } else {
        Err(format!("the requests never reach rules {missing:?}"))
    }
}
