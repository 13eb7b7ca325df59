//! What the explorer reads and writes besides its page: the try form's
//! fields as a request, and the JSON of `/api/policy`.

use bytes::Bytes;
use serde_json::{Value, json};

use super::view::Form;
use crate::engine::{self, DecisionRequest, Matrix, Policy, Taxonomy};

/// The try form's fields as a request, in the API's terms.
pub(super) fn form_request(form: &Form) -> Result<DecisionRequest, String> {
    let list = |name: &str| -> Vec<String> {
        form.get(name)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let pairs = |name: &str| -> Result<std::collections::BTreeMap<String, String>, String> {
        list(name)
            .into_iter()
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => Err(format!("`{name}`: `{pair}` is not key=value")),
            })
            .collect()
    };
    let deidentification = match form.get("deidentification") {
        "" => None,
        name => Some(
            engine::Deidentification::parse(name)
                .ok_or_else(|| format!("`resource.deidentification`: unknown state `{name}`"))?,
        ),
    };
    let group_size = match form.get("group_size") {
        "" => None,
        k => Some(
            k.parse::<u64>()
                .map_err(|_| format!("`resource.group_size`: `{k}` is not a whole number"))?,
        )
        .filter(|&k| k > 0),
    };
    Ok(DecisionRequest {
        subject: engine::Subject {
            id: form.get("subject").to_string(),
            tenant: form.get("tenant").to_string(),
            roles: list("roles"),
        },
        resource: engine::Resource {
            category: form.get("category").to_string(),
            owner_tenant: form.get("owner_tenant").to_string(),
            deidentification,
            group_size,
            origin: list("origin"),
            attributes: pairs("data_attributes")?,
        },
        purpose: form.get("purpose").to_string(),
        action: form.get("action").to_string(),
        context: engine::Context {
            customer_instruction: form.get("instruction").to_string(),
            attributes: pairs("context")?,
        },
        supported_obligations: list("obligations"),
        request_id: String::new(),
        inherited_purpose: String::new(),
    })
}

fn tree(taxonomy: &Taxonomy) -> Value {
    Value::Array(
        taxonomy
            .nodes()
            .map(|(_, n)| {
                json!({
                    "id": n.id,
                    "description": n.description,
                    "parent": n.parent.and_then(|p| taxonomy.node(p)).map(|p| p.id.clone()),
                    "children": n.children.iter().filter_map(|&c| taxonomy.node(c)).map(|c| c.id.clone()).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// The JSON of `/api/policy` (documented in the README).
pub(super) fn policy_document(
    policy: &Policy,
    matrix: &Matrix,
    last_reload_error: &str,
) -> Result<Bytes, String> {
    let rules: Vec<Value> = policy
        .rules()
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "description": r.description,
                "effect": r.effect.as_str(),
                "mode": r.mode.as_str(),
                "purposes": r.purposes,
                "dataCategories": r.data_categories,
                "when": r.when.as_ref().map(engine::Condition::describe),
                "unless": r.unless.as_ref().map(engine::Condition::describe),
                "obligations": r.obligations,
                "text": r.describe(),
            })
        })
        .collect();
    // Written out directly, not through a JSON tree: the matrix is the
    // bulk of it.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Document<'a> {
        name: &'a str,
        description: &'a str,
        revision: &'a str,
        last_reload_error: &'a str,
        purposes: Value,
        data_categories: Value,
        rules: Vec<Value>,
        claims: Option<&'a [engine::Claim]>,
        matrix: &'a Matrix,
    }
    serde_json::to_vec(&Document {
        name: policy.name(),
        description: policy.description(),
        revision: policy.revision(),
        last_reload_error,
        purposes: tree(policy.purposes()),
        data_categories: tree(policy.categories()),
        rules,
        claims: policy.claims(),
        matrix,
    })
    .map(Bytes::from)
    .map_err(|e| format!("cannot encode the policy: {e}"))
}
