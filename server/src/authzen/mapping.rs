//! AuthZEN 1.0 JSON to and from the engine's request and answer.
//!
//! | AuthZEN | purposegate |
//! |---|---|
//! | `subject.type` | required, not decided on |
//! | `subject.id` | `subject.id` |
//! | `subject.properties.tenant`, `.roles` | `subject.tenant`, `.roles` |
//! | `action.name` | `purpose` |
//! | `resource.type` | `resource.category` |
//! | `resource.id` | the resource attribute `id` |
//! | `resource.properties.owner_tenant`, `.data_subject`, `.deidentification`, `.group_size`, `.origin`, `.attributes` | the `resource` fields of the same names |
//! | `context.customer_instruction`, `.attributes`, `.supported_obligations` | `context.customer_instruction`, `.attributes`, `supported_obligations` |
//!
//! Property names are accepted in lowerCamelCase too, as protobuf JSON
//! does (`ownerTenant`); both spellings of one field at once are refused.
//! Unknown fields are ignored, as the specification requires. Every
//! problem is a [`Problem`] naming the field, answered with HTTP 400.

mod answer;
mod fields;

use serde_json::{Map, Value};

use crate::engine::{self, DecisionRequest};
pub use answer::{Action, Answer, AnswerContext, Decided, ItemError, action, decision, failed};
use fields::{
    deidentification, field, group_size, optional_string, required_string, string, string_list,
    string_map,
};

/// What is wrong with a request, in words for the caller (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn problem(text: impl Into<String>) -> Problem {
    Problem(text.into())
}

/// The JSON type of `v`, in the words of the message.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `v` as an object, or why not.
pub fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Problem> {
    v.as_object().ok_or_else(|| not_an_object(v, path))
}

/// Why `v`, which is not an object, cannot be the object at `path`.
pub fn not_an_object(v: &Value, path: &str) -> Problem {
    problem(format!("`{path}` must be an object, not {}", kind(v)))
}

/// Where an evaluation's entities are read: the item of `evaluations`,
/// and for each entity it lacks, the top-level default (replaced whole,
/// never merged; read in place, never copied per item).
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub item: &'a Map<String, Value>,
    pub defaults: Option<&'a Map<String, Value>>,
}

impl<'a> Source<'a> {
    /// A request on its own, with no defaults.
    pub fn alone(item: &'a Map<String, Value>) -> Self {
        Source {
            item,
            defaults: None,
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        match self.item.get(key) {
            Some(v) => Some(v),
            None => self.defaults.and_then(|d| d.get(key)),
        }
    }
}

/// The entity `key`, which must be an object.
fn entity<'a>(src: Source<'a>, key: &str) -> Result<&'a Map<String, Value>, Problem> {
    match src.get(key).filter(|v| !v.is_null()) {
        None => Err(problem(format!("`{key}` is missing"))),
        Some(v) => object(v, key),
    }
}

/// `properties` of an entity: absent is empty.
fn properties<'a>(
    entity: &'a Map<String, Value>,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, Problem> {
    match entity.get("properties").filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(v) => object(v, &format!("{path}.properties")).map(Some),
    }
}

/// What a search leaves out: the action of an action search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// An evaluation: subject, action and resource.
    Evaluation,
    /// An action search: subject and resource; an action, if sent, is
    /// ignored.
    ActionSearch,
}

/// The subject's `type` (`user`, `workload`, …): the engine does not
/// decide on it, the decision log records it.
pub fn subject_type(src: Source<'_>) -> Result<String, Problem> {
    required_string(entity(src, "subject")?, "type", "subject")
}

/// An AuthZEN request (one evaluation, or an action search) as the
/// engine's request. The caller checks the engine's limits (`validate`).
pub fn request(
    src: Source<'_>,
    asked: Asked,
    request_id: &str,
) -> Result<DecisionRequest, Problem> {
    let subject = entity(src, "subject")?;
    required_string(subject, "type", "subject")?;
    let subject_id = required_string(subject, "id", "subject")?;
    let (tenant, roles) = match properties(subject, "subject")? {
        None => (String::new(), Vec::new()),
        Some(p) => (
            optional_string(p, "tenant", "subject.properties")?,
            string_list(p, "roles", "subject.properties")?,
        ),
    };
    let purpose = match asked {
        Asked::Evaluation => required_string(entity(src, "action")?, "name", "action")?,
        Asked::ActionSearch => String::new(),
    };
    let resource = entity(src, "resource")?;
    let category = required_string(resource, "type", "resource")?;
    let resource_id = required_string(resource, "id", "resource")?;
    let mut data = engine::Resource {
        category,
        ..Default::default()
    };
    if let Some(p) = properties(resource, "resource")? {
        let path = "resource.properties";
        data.owner_tenant = optional_string(p, "owner_tenant", path)?;
        data.data_subject = optional_string(p, "data_subject", path)?;
        if let Some(v) = field(p, "deidentification", path)? {
            data.deidentification = deidentification(v, &format!("{path}.deidentification"))?;
        }
        if let Some(v) = field(p, "group_size", path)? {
            data.group_size = group_size(v, &format!("{path}.group_size"))?;
        }
        data.origin = string_list(p, "origin", path)?;
        data.attributes = string_map(p, "attributes", path)?;
        if data.attributes.contains_key("id") {
            return Err(problem(
                "`resource.properties.attributes.id` is given by `resource.id`; send it there only",
            ));
        }
    }
    data.attributes.insert("id".to_string(), resource_id);
    let mut req = DecisionRequest {
        purpose,
        resource: data,
        subject: engine::Subject {
            id: subject_id,
            tenant,
            roles,
        },
        request_id: request_id.to_string(),
        ..Default::default()
    };
    match src.get("context").filter(|v| !v.is_null()) {
        None => {}
        Some(v) => {
            let context = object(v, "context")?;
            req.context = engine::Context {
                customer_instruction: optional_string(context, "customer_instruction", "context")?,
                attributes: string_map(context, "attributes", "context")?,
            };
            req.supported_obligations = string_list(context, "supported_obligations", "context")?;
        }
    }
    Ok(req)
}

/// The semantics of `options.evaluations_semantic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantic {
    ExecuteAll,
    DenyOnFirstDeny,
    PermitOnFirstPermit,
}

impl Semantic {
    pub fn of(body: &Map<String, Value>) -> Result<Self, Problem> {
        let Some(options) = body.get("options").filter(|v| !v.is_null()) else {
            return Ok(Semantic::ExecuteAll);
        };
        let options = object(options, "options")?;
        match options.get("evaluations_semantic").filter(|v| !v.is_null()) {
            None => Ok(Semantic::ExecuteAll),
            Some(v) => match string(v, "options.evaluations_semantic")?.as_str() {
                "execute_all" => Ok(Semantic::ExecuteAll),
                "deny_on_first_deny" => Ok(Semantic::DenyOnFirstDeny),
                "permit_on_first_permit" => Ok(Semantic::PermitOnFirstPermit),
                other => Err(problem(format!(
                    "`options.evaluations_semantic`: unknown semantic `{other}`; one of execute_all, deny_on_first_deny, permit_on_first_permit"
                ))),
            },
        }
    }

    /// Whether the item that answered `decision` ends the batch.
    pub fn stops_at(self, decision: bool) -> bool {
        match self {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !decision,
            Semantic::PermitOnFirstPermit => decision,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fields::{MAX_ENTRIES, MAX_STRING_BYTES};
    use super::*;
    use crate::engine::Deidentification;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn maps_every_documented_field() {
        let req = request(
            Source::alone(&body(json!({
                "subject": {"type": "workload", "id": "crm", "properties": {"tenant": "contoso", "roles": ["support"]}},
                "action": {"name": "troubleshoot"},
                "resource": {"type": "customer-data", "id": "ticket-7", "properties": {
                    "ownerTenant": "contoso", "dataSubject": "u-42", "deidentification": "unlinked_pseudonymized",
                    "group_size": "60", "origin": ["diagnostic-data"], "attributes": {"region": "eu"}}},
                "context": {"customerInstruction": "DPA-7", "attributes": {"processing": "ps"}, "supported_obligations": ["log-access"], "time": "now"},
            }))),
            Asked::Evaluation,
            "rid",
        );
        let req = req.map_err(|p| p.0);
        let want = DecisionRequest {
            purpose: "troubleshoot".into(),
            resource: engine::Resource {
                category: "customer-data".into(),
                owner_tenant: "contoso".into(),
                data_subject: "u-42".into(),
                deidentification: Some(Deidentification::UnlinkedPseudonymized),
                group_size: Some(60),
                origin: vec!["diagnostic-data".into()],
                attributes: [("id", "ticket-7"), ("region", "eu")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            },
            subject: engine::Subject {
                id: "crm".into(),
                tenant: "contoso".into(),
                roles: vec!["support".into()],
            },
            action: String::new(),
            context: engine::Context {
                customer_instruction: "DPA-7".into(),
                attributes: [("processing".to_string(), "ps".to_string())].into(),
            },
            supported_obligations: vec!["log-access".into()],
            request_id: "rid".into(),
            inherited_purpose: String::new(),
        };
        assert_eq!(req, Ok(want));
    }

    #[test]
    fn names_what_is_missing_or_mistyped() {
        let base = json!({"subject": {"type": "u", "id": "a"}, "action": {"name": "p"}, "resource": {"type": "c", "id": "1"}});
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"action": base["action"], "resource": base["resource"]}),
                "`subject` is missing",
            ),
            (
                json!({"subject": {"id": "a"}, "action": base["action"], "resource": base["resource"]}),
                "`subject.type` is missing",
            ),
            (
                json!({"subject": {"type": "u", "id": ""}, "action": base["action"], "resource": base["resource"]}),
                "`subject.id` must not be empty",
            ),
            (
                json!({"subject": "alice", "action": base["action"], "resource": base["resource"]}),
                "`subject` must be an object, not a string",
            ),
            (
                json!({"subject": base["subject"], "action": {"name": 123}, "resource": base["resource"]}),
                "`action.name` must be a string, not a number",
            ),
            (
                json!({"subject": base["subject"], "action": {}, "resource": base["resource"]}),
                "`action.name` is missing",
            ),
            (
                json!({"subject": base["subject"], "action": base["action"], "resource": {"type": "c"}}),
                "`resource.id` is missing",
            ),
            (
                json!({"subject": base["subject"], "action": base["action"], "resource": {"type": "c", "id": "1", "properties": {"owner_tenant": "a", "ownerTenant": "b"}}}),
                "are the same field",
            ),
            (
                json!({"subject": base["subject"], "action": base["action"], "resource": {"type": "c", "id": "1", "properties": {"deidentification": "scrambled"}}}),
                "unknown de-identification `scrambled`",
            ),
            (
                json!({"subject": base["subject"], "action": base["action"], "resource": {"type": "c", "id": "1", "properties": {"group_size": -3}}}),
                "whole number",
            ),
            (
                json!({"subject": base["subject"], "action": base["action"], "resource": {"type": "c", "id": "1", "properties": {"attributes": {"id": "2"}}}}),
                "given by `resource.id`",
            ),
        ];
        for (body_value, says) in cases {
            let got = request(
                Source::alone(&body(body_value.clone())),
                Asked::Evaluation,
                "",
            );
            match got {
                Err(Problem(text)) => assert!(text.contains(says), "{body_value}: {text}"),
                Ok(req) => panic!("{body_value} was accepted as {req:?}"),
            }
        }
    }

    #[test]
    fn an_action_search_needs_no_action() {
        let req = request(
            Source::alone(&body(
                json!({"subject": {"type": "u", "id": "a"}, "resource": {"type": "c", "id": "1"}}),
            )),
            Asked::ActionSearch,
            "",
        );
        assert_eq!(req.map(|r| r.purpose), Ok(String::new()));
    }

    #[test]
    fn defaults_are_replaced_whole() {
        let defaults = body(
            json!({"subject": {"type": "u", "id": "a"}, "action": {"name": "read"}, "context": {"attributes": {"x": "1"}}}),
        );
        let item = body(
            json!({"action": {"name": "can_edit"}, "resource": {"type": "d", "id": "3"}, "context": {"customer_instruction": "c"}}),
        );
        let req = request(
            Source {
                item: &item,
                defaults: Some(&defaults),
            },
            Asked::Evaluation,
            "",
        )
        .unwrap();
        assert_eq!(req.subject.id, "a");
        assert_eq!(req.purpose, "can_edit");
        assert_eq!(req.resource.category, "d");
        // The item's context replaces the default's: no `x` attribute.
        assert_eq!(req.context.customer_instruction, "c");
        assert!(req.context.attributes.is_empty());
    }

    #[test]
    fn nothing_long_is_copied() {
        let long = "x".repeat(MAX_STRING_BYTES + 1);
        let many: Map<String, Value> = (0..=MAX_ENTRIES)
            .map(|i| (format!("k{i}"), Value::from("v")))
            .collect();
        for (resource, says) in [
            (json!({"type": long, "id": "1"}), "bytes long"),
            (
                json!({"type": "c", "id": "1", "properties": {"attributes": many}}),
                "entries",
            ),
        ] {
            let req = body(
                json!({"subject": {"type": "u", "id": "a"}, "action": {"name": "p"}, "resource": resource}),
            );
            let got = request(Source::alone(&req), Asked::Evaluation, "").map_err(|p| p.0);
            assert!(got.as_ref().is_err_and(|e| e.contains(says)), "{got:?}");
        }
    }

    #[test]
    fn semantics_stop_where_the_specification_says() {
        let of = |v: Value| Semantic::of(&body(json!({ "options": v })));
        assert_eq!(of(json!({})), Ok(Semantic::ExecuteAll));
        assert_eq!(
            of(json!({"evaluations_semantic": "deny_on_first_deny", "another_option": 1})),
            Ok(Semantic::DenyOnFirstDeny)
        );
        assert!(of(json!({"evaluations_semantic": "first"})).is_err());
        assert!(Semantic::DenyOnFirstDeny.stops_at(false));
        assert!(!Semantic::DenyOnFirstDeny.stops_at(true));
        assert!(Semantic::PermitOnFirstPermit.stops_at(true));
        assert!(!Semantic::ExecuteAll.stops_at(false));
    }
}
