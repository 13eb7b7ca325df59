//! The question a decision answers, in the engine's own types.
//!
//! Empty strings mean "not given", as in the protobuf API, so converting at
//! the gRPC edge is a move, not a translation.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::decode::Decoder;
use super::model::Deidentification;
use super::yaml::{Node, Value};

/// At most this many origin categories: each is a separate evaluation.
pub const MAX_ORIGINS: usize = 64;
/// Longest id: purpose, category, tenant, role, origin, obligation, action,
/// request id, attribute key.
pub const MAX_ID_BYTES: usize = 256;
/// Longest subject id (a SPIFFE ID may take 2,048 bytes).
pub const MAX_SUBJECT_ID_BYTES: usize = 2048;
/// Longest free text: the customer instruction, an attribute value.
pub const MAX_TEXT_BYTES: usize = 1024;
/// At most this many roles, obligations, or entries of one attributes map.
pub const MAX_LIST_ENTRIES: usize = 32;

/// May `subject` process `resource` for `purpose`?
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DecisionRequest {
    pub purpose: String,
    pub resource: Resource,
    #[serde(skip_serializing_if = "Subject::is_empty")]
    pub subject: Subject,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub action: String,
    #[serde(skip_serializing_if = "Context::is_empty")]
    pub context: Context,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub supported_obligations: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    /// The purpose the data was permitted for upstream (a verified purpose
    /// context): `purpose` must be it or a descendant of it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub inherited_purpose: String,
}

/// Who processes the data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Subject {
    pub id: String,
    /// The customer the subject acts for; empty when not given.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tenant: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// The data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    pub category: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub owner_tenant: String,
    /// Whose data it is, within the owner tenant: with it, the data
    /// subject's choices (consent, objection, restriction) are read.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub data_subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deidentification: Option<Deidentification>,
    /// k of an aggregate; `None` when not given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_size: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub origin: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// Facts about the processing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Context {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub customer_instruction: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl Subject {
    /// Whether nothing about the subject is given.
    pub fn is_empty(&self) -> bool {
        self.id.is_empty() && self.tenant.is_empty() && self.roles.is_empty()
    }
}

impl Context {
    /// Whether the request gives no context.
    pub fn is_empty(&self) -> bool {
        self.customer_instruction.is_empty() && self.attributes.is_empty()
    }
}

/// A request that cannot be asked at all (the gRPC edge answers
/// `INVALID_ARGUMENT`). Names the field in its API spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRequest {
    pub field: String,
    pub problem: String,
}

impl fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}` {}", self.field, self.problem)
    }
}

impl std::error::Error for InvalidRequest {}

impl DecisionRequest {
    /// The checks every edge makes before asking the engine (semantic 8:
    /// an empty purpose or category is an invalid argument, not a decision).
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        let invalid = |field: &str, problem: String| InvalidRequest {
            field: field.to_string(),
            problem,
        };
        if self.purpose.is_empty() {
            return Err(invalid("purpose", "must not be empty".into()));
        }
        self.validate_facts()
    }

    /// The checks of the reverse question
    /// ([`crate::Policy::permitted_purposes`]): the purpose left empty,
    /// every other field as [`DecisionRequest::validate`] checks it.
    pub fn validate_without_purpose(&self) -> Result<(), InvalidRequest> {
        if !self.purpose.is_empty() {
            return Err(InvalidRequest {
                field: "purpose".to_string(),
                problem: "must be empty: the question is for which purposes the data may be used"
                    .to_string(),
            });
        }
        self.validate_facts()
    }

    /// The checks of [`DecisionRequest::validate`] but the purpose's: for
    /// the reverse question, which asks without one
    /// ([`crate::Policy::permitted_purposes`]).
    pub fn validate_facts(&self) -> Result<(), InvalidRequest> {
        let invalid = |field: &str, problem: String| InvalidRequest {
            field: field.to_string(),
            problem,
        };
        if self.resource.category.is_empty() {
            return Err(invalid("resource.category", "must not be empty".into()));
        }
        if self.resource.origin.len() > MAX_ORIGINS {
            return Err(invalid(
                "resource.origin",
                format!(
                    "lists {} categories; at most {MAX_ORIGINS} are accepted",
                    self.resource.origin.len()
                ),
            ));
        }
        if let Some(i) = self.resource.origin.iter().position(String::is_empty) {
            return Err(invalid(
                &format!("resource.origin[{i}]"),
                "must not be empty".into(),
            ));
        }
        self.check_sizes()
            .map_err(|(field, problem)| invalid(&field, problem))
    }

    /// Every field within its documented limit, so no caller can make a
    /// decision (or its cache entry, log line or reason) large.
    fn check_sizes(&self) -> Result<(), (String, String)> {
        // A field's name is written only for the one that is too large:
        // checking a valid request formats nothing.
        let long = |field: String, value: &str, max: usize| -> Result<(), (String, String)> {
            Err((
                field,
                format!("is {} bytes long; at most {max} are accepted", value.len()),
            ))
        };
        let text = |field: &str, value: &str, max: usize| -> Result<(), (String, String)> {
            if value.len() > max {
                return long(field.to_string(), value, max);
            }
            Ok(())
        };
        let list = |field: &str, values: &[String], max: usize| -> Result<(), (String, String)> {
            if values.len() > max {
                return Err((
                    field.to_string(),
                    format!("lists {} entries; at most {max} are accepted", values.len()),
                ));
            }
            for (i, v) in values.iter().enumerate() {
                if v.len() > MAX_ID_BYTES {
                    return long(format!("{field}[{i}]"), v, MAX_ID_BYTES);
                }
            }
            Ok(())
        };
        let map =
            |field: &str, values: &BTreeMap<String, String>| -> Result<(), (String, String)> {
                if values.len() > MAX_LIST_ENTRIES {
                    return Err((
                        field.to_string(),
                        format!(
                            "has {} entries; at most {MAX_LIST_ENTRIES} are accepted",
                            values.len()
                        ),
                    ));
                }
                for (k, v) in values {
                    if k.len() > MAX_ID_BYTES {
                        return long(format!("{field} key"), k, MAX_ID_BYTES);
                    }
                    if v.len() > MAX_TEXT_BYTES {
                        return long(format!("{field}[{k}]"), v, MAX_TEXT_BYTES);
                    }
                }
                Ok(())
            };
        text("purpose", &self.purpose, MAX_ID_BYTES)?;
        text("action", &self.action, MAX_ID_BYTES)?;
        text("request_id", &self.request_id, MAX_ID_BYTES)?;
        text("inherited_purpose", &self.inherited_purpose, MAX_ID_BYTES)?;
        text("subject.id", &self.subject.id, MAX_SUBJECT_ID_BYTES)?;
        text("subject.tenant", &self.subject.tenant, MAX_ID_BYTES)?;
        list("subject.roles", &self.subject.roles, MAX_LIST_ENTRIES)?;
        text("resource.category", &self.resource.category, MAX_ID_BYTES)?;
        text(
            "resource.owner_tenant",
            &self.resource.owner_tenant,
            MAX_ID_BYTES,
        )?;
        text(
            "resource.data_subject",
            &self.resource.data_subject,
            MAX_SUBJECT_ID_BYTES,
        )?;
        list("resource.origin", &self.resource.origin, MAX_ORIGINS)?;
        map("resource.attributes", &self.resource.attributes)?;
        text(
            "context.customer_instruction",
            &self.context.customer_instruction,
            MAX_TEXT_BYTES,
        )?;
        map("context.attributes", &self.context.attributes)?;
        list(
            "supported_obligations",
            &self.supported_obligations,
            MAX_LIST_ENTRIES,
        )
    }
}

const REQUEST_KEYS: &[&str] = &[
    "subject",
    "resource",
    "purpose",
    "action",
    "context",
    "supported_obligations",
    "supportedObligations",
    "request_id",
    "requestId",
    "inherited_purpose",
    "inheritedPurpose",
];

/// Reads a request written as the protobuf JSON of `CheckRequest` (camel or
/// snake case field names, enum names or numbers, 64-bit numbers as numbers
/// or strings), from YAML or JSON.
pub fn decode_request(d: &mut Decoder<'_>, node: &Node) -> Option<DecisionRequest> {
    let f = d.fields(node, "request", REQUEST_KEYS)?;
    let before = d.sink.diagnostics.len();
    let mut req = DecisionRequest::default();
    let text = |d: &mut Decoder<'_>, n: Option<&Node>, what: &str| -> String {
        n.and_then(|n| opt_string(d, n, what)).unwrap_or_default()
    };
    req.purpose = text(d, f.get("purpose"), "`purpose`");
    req.action = text(d, f.get("action"), "`action`");
    let request_id = f.get_one(d, &["request_id", "requestId"]);
    req.request_id = text(d, request_id, "`request_id`");
    let inherited = f.get_one(d, &["inherited_purpose", "inheritedPurpose"]);
    req.inherited_purpose = text(d, inherited, "`inherited_purpose`");
    if let Some(n) = f.get_one(d, &["supported_obligations", "supportedObligations"]) {
        req.supported_obligations = d.strings(n, "`supported_obligations`").unwrap_or_default();
    }
    if let Some(n) = f.get("subject") {
        if let Some(s) = d.fields(n, "`subject`", &["id", "tenant", "roles"]) {
            req.subject.id = text(d, s.get("id"), "`subject.id`");
            req.subject.tenant = text(d, s.get("tenant"), "`subject.tenant`");
            if let Some(r) = s.get("roles") {
                req.subject.roles = d.strings(r, "`subject.roles`").unwrap_or_default();
            }
        }
    }
    if let Some(n) = f.get("resource") {
        let keys = [
            "category",
            "owner_tenant",
            "ownerTenant",
            "data_subject",
            "dataSubject",
            "deidentification",
            "group_size",
            "groupSize",
            "origin",
            "attributes",
        ];
        if let Some(r) = d.fields(n, "`resource`", &keys) {
            req.resource.category = text(d, r.get("category"), "`resource.category`");
            let owner_tenant = r.get_one(d, &["owner_tenant", "ownerTenant"]);
            req.resource.owner_tenant = text(d, owner_tenant, "`resource.owner_tenant`");
            let data_subject = r.get_one(d, &["data_subject", "dataSubject"]);
            req.resource.data_subject = text(d, data_subject, "`resource.data_subject`");
            if let Some(n) = r.get("deidentification") {
                req.resource.deidentification = deidentification(d, n);
            }
            if let Some(n) = r.get_one(d, &["group_size", "groupSize"]) {
                req.resource.group_size = d
                    .uint(n, "`resource.group_size`", u64::MAX)
                    .filter(|&k| k != 0);
            }
            if let Some(n) = r.get("origin") {
                req.resource.origin = d.strings(n, "`resource.origin`").unwrap_or_default();
            }
            if let Some(n) = r.get("attributes") {
                req.resource.attributes =
                    d.string_map(n, "`resource.attributes`").unwrap_or_default();
            }
        }
    }
    if let Some(n) = f.get("context") {
        let keys = ["customer_instruction", "customerInstruction", "attributes"];
        if let Some(c) = d.fields(n, "`context`", &keys) {
            let instruction = c.get_one(d, &["customer_instruction", "customerInstruction"]);
            req.context.customer_instruction =
                text(d, instruction, "`context.customer_instruction`");
            if let Some(n) = c.get("attributes") {
                req.context.attributes =
                    d.string_map(n, "`context.attributes`").unwrap_or_default();
            }
        }
    }
    (d.sink.diagnostics.len() == before).then_some(req)
}

/// A string field; `null` counts as not given.
fn opt_string(d: &mut Decoder<'_>, node: &Node, what: &str) -> Option<String> {
    match node.value {
        Value::Null => None,
        _ => d.string(node, what),
    }
}

fn deidentification(d: &mut Decoder<'_>, node: &Node) -> Option<Deidentification> {
    let what = "`resource.deidentification`";
    match &node.value {
        Value::Null => None,
        Value::String(s) if s == "DEIDENTIFICATION_UNSPECIFIED" || s.is_empty() => None,
        Value::String(s) => match Deidentification::parse(s) {
            Some(state) => Some(state),
            None => {
                let names = Deidentification::ALL.map(Deidentification::api_name);
                let hint = super::suggest::did_you_mean(s, names);
                d.error(
                    node.span,
                    format!(
                        "{what}: unknown state `{s}`{hint}; expected one of {}",
                        names.join(", ")
                    ),
                );
                None
            }
        },
        Value::Int(0) => None,
        Value::Int(i) => match usize::try_from(*i - 1)
            .ok()
            .and_then(|i| Deidentification::ALL.get(i))
        {
            Some(state) => Some(*state),
            None => {
                d.error(node.span, format!("{what}: unknown state number {i}"));
                None
            }
        },
        _ => {
            d.error(
                node.span,
                format!("{what} must be a state name, found {}", node.value.kind()),
            );
            None
        }
    }
}
