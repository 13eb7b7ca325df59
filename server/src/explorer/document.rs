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
            data_subject: form.get("data_subject").to_string(),
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

/// A purpose or category tree as `/api/policy` writes it, serialised
/// straight from the policy: a tree of 100,000 purposes as a JSON value
/// first took over 100 MB for a moment.
struct Tree<'a>(&'a Taxonomy);

/// One node; members in the order the JSON has always had (sorted).
#[derive(serde::Serialize)]
struct TreeNode<'a> {
    children: Ids<'a>,
    description: &'a str,
    id: &'a str,
    parent: Option<&'a str>,
}

/// Nodes' ids, written as a list.
struct Ids<'a>(&'a Taxonomy, &'a [engine::NodeIdx]);

impl serde::Serialize for Tree<'_> {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        let taxonomy = self.0;
        out.collect_seq(taxonomy.nodes().map(|(_, n)| TreeNode {
            children: Ids(taxonomy, &n.children),
            description: &n.description,
            id: &n.id,
            parent: n.parent.and_then(|p| taxonomy.node(p)).map(|p| &*p.id),
        }))
    }
}

impl serde::Serialize for Ids<'_> {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        let Ids(taxonomy, ids) = *self;
        out.collect_seq(ids.iter().filter_map(|&c| taxonomy.node(c)).map(|c| &*c.id))
    }
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
        purposes: Tree<'a>,
        data_categories: Tree<'a>,
        rules: Vec<Value>,
        claims: Option<&'a [engine::Claim]>,
        matrix: &'a Matrix,
    }
    serde_json::to_vec(&Document {
        name: policy.name(),
        description: policy.description(),
        revision: policy.revision(),
        last_reload_error,
        purposes: Tree(policy.purposes()),
        data_categories: Tree(policy.categories()),
        rules,
        claims: policy.claims(),
        matrix,
    })
    .map(Bytes::from)
    .map_err(|e| format!("cannot encode the policy: {e}"))
}
