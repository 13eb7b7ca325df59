//! What one decision line says: the whole question (so it can be asked
//! again, `replay`), the answer and the revision, with the fields a
//! deployment must not log dropped or hashed (`--decision-log-redact`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::engine::{Decision, DecisionRequest};

/// A request field the decision log can leave out or hash, by its key in
/// the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    RequestId,
    Subject,
    Tenant,
    Roles,
    Action,
    ResourceId,
    OwnerTenant,
    DataSubject,
    Deidentification,
    GroupSize,
    Origin,
    ResourceAttributes,
    CustomerInstruction,
    ContextAttributes,
    SupportedObligations,
}

impl Field {
    pub const ALL: [Field; 15] = [
        Field::RequestId,
        Field::Subject,
        Field::Tenant,
        Field::Roles,
        Field::Action,
        Field::ResourceId,
        Field::OwnerTenant,
        Field::DataSubject,
        Field::Deidentification,
        Field::GroupSize,
        Field::Origin,
        Field::ResourceAttributes,
        Field::CustomerInstruction,
        Field::ContextAttributes,
        Field::SupportedObligations,
    ];

    /// Its key in the decision line.
    pub fn key(self) -> &'static str {
        match self {
            Field::RequestId => "request_id",
            Field::Subject => "subject",
            Field::Tenant => "tenant",
            Field::Roles => "roles",
            Field::Action => "action",
            Field::ResourceId => "resource_id",
            Field::OwnerTenant => "owner_tenant",
            Field::DataSubject => "data_subject",
            Field::Deidentification => "deidentification",
            Field::GroupSize => "group_size",
            Field::Origin => "origin",
            Field::ResourceAttributes => "resource_attributes",
            Field::CustomerInstruction => "customer_instruction",
            Field::ContextAttributes => "context_attributes",
            Field::SupportedObligations => "supported_obligations",
        }
    }

    pub fn from_key(key: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.key() == key)
    }

    /// Whether hashing keeps anything: a state or a number hashed says
    /// nothing a reader could not guess, so those can only be dropped.
    fn hashable(self) -> bool {
        !matches!(self, Field::Deidentification | Field::GroupSize)
    }
}

/// What is done to a redacted field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Left out of the line.
    Drop,
    /// Each value replaced by `sha256:` and 16 hex digits of its SHA-256:
    /// equal values stay equal (a tenant and the data's owner, say), the
    /// value itself is not written.
    Hash,
}

impl How {
    pub fn as_str(self) -> &'static str {
        match self {
            How::Drop => "drop",
            How::Hash => "hash",
        }
    }
}

/// `--decision-log-redact`: the fields left out or hashed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redaction {
    fields: BTreeMap<Field, How>,
}

impl std::str::FromStr for Redaction {
    type Err = String;

    /// `FIELD[=drop|hash],...`, e.g. `subject=hash,roles`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut fields = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, how) = match part.split_once('=') {
                Some((key, "drop")) => (key, How::Drop),
                Some((key, "hash")) => (key, How::Hash),
                Some((_, other)) => {
                    return Err(format!(
                        "`{part}`: unknown treatment `{other}`; use `drop` or `hash`"
                    ));
                }
                None => (part, How::Drop),
            };
            let field = Field::from_key(key).ok_or_else(|| {
                let keys = Field::ALL.map(Field::key);
                format!(
                    "unknown field `{key}`{}; the fields are {}",
                    crate::engine::did_you_mean(key, keys),
                    keys.join(", ")
                )
            })?;
            if how == How::Hash && !field.hashable() {
                return Err(format!("`{key}` can only be dropped, not hashed"));
            }
            if fields.insert(field, how).is_some() {
                return Err(format!("`{key}` is given twice"));
            }
        }
        Ok(Redaction { fields })
    }
}

impl Redaction {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn how(&self, field: Field) -> Option<How> {
        self.fields.get(&field).copied()
    }

    /// The `redacted` member of every decision line: each field and what
    /// was done to it.
    pub fn described(&self) -> BTreeMap<&'static str, &'static str> {
        self.fields
            .iter()
            .map(|(f, how)| (f.key(), how.as_str()))
            .collect()
    }
}

/// `sha256:` and the first 16 hex digits of the value's SHA-256.
pub fn hashed(value: &str) -> String {
    let digest = Sha256::digest(value.as_bytes());
    let hex = super::chain::hex(digest.get(..8).unwrap_or_default());
    format!("sha256:{hex}")
}

/// Who asked, and in what form: the face (`grpc.Check`,
/// `authzen.evaluation`, `explorer.try`, …) and, from AuthZEN, the
/// subject's `type`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Via {
    pub face: &'static str,
    pub subject_type: Option<String>,
}

impl Via {
    pub fn face(face: &'static str) -> Self {
        Via {
            face,
            subject_type: None,
        }
    }
}

/// One decision (or a run of identical ones), as queued.
#[derive(Debug)]
pub struct Record {
    pub via: Via,
    /// For the reverse question: the purposes permitted (the line then
    /// has no `decision`).
    pub permitted: Option<Vec<Arc<str>>>,
    /// Taken when the decision is made, written out as RFC 3339 by the
    /// writer, off the request path.
    pub time: SystemTime,
    pub request: DecisionRequest,
    pub decision: Decision,
    pub rule_ids: Vec<Arc<str>>,
    pub reason: String,
    pub revision: Arc<str>,
    pub monitor_decision: Option<Decision>,
    /// The choices the decision read, for `replay`.
    pub choices: Option<Arc<crate::engine::ChoiceFacts>>,
    pub latency_us: u64,
    /// Identical decisions folded into this one.
    pub count: u64,
    /// When the last of them was made.
    pub last_time: Option<SystemTime>,
    /// The bytes of the request the decision answered, when known: its
    /// line is then kept within [`LOG_BYTES_PER_REQUEST_BYTE`] times that
    /// (the reason, then the rule ids, left out).
    pub request_bytes: usize,
    /// A whole batch, already written as lines (`batch.rs`): the record's
    /// other members then only route it through the queue.
    pub batch: Option<Box<super::batch::Lines>>,
}

/// At most this many bytes of log, seal included, for each byte of an
/// AuthZEN request a single line answers.
pub const LOG_BYTES_PER_REQUEST_BYTE: usize = 4;

/// Members a line can leave out to stay within its request's budget,
/// each derived from the question (`replay` asks it again): first the
/// reason, then the rule ids.
pub const LEFT_OUT_IN_TURN: [&[&str]; 3] = [&[], &["reason"], &["reason", "rule_ids"]];

/// Bytes a list entry or map entry costs beyond its text.
const ENTRY_OVERHEAD: usize = 24;

impl Record {
    /// A record of `request` made now, with no answer yet (a permit with
    /// no rules).
    pub fn new(via: Via, request: DecisionRequest, revision: Arc<str>, latency_us: u64) -> Self {
        Record {
            time: SystemTime::now(),
            via,
            permitted: None,
            request,
            decision: Decision::Permit,
            rule_ids: Vec::new(),
            reason: String::new(),
            revision,
            monitor_decision: None,
            choices: None,
            latency_us,
            count: 1,
            last_time: None,
            request_bytes: 0,
            batch: None,
        }
    }

    /// Decisions in the record that were not permits.
    pub fn denied(&self) -> u64 {
        match &self.batch {
            Some(batch) => batch.denied,
            None => u64::from(self.decision != Decision::Permit) * self.count,
        }
    }

    /// Whether `other` is the same decision again: all but its time,
    /// request id and latency.
    pub fn same_decision(&self, other: &Record) -> bool {
        let (a, b) = (&self.request, &other.request);
        self.batch.is_none()
            && other.batch.is_none()
            && self.decision == other.decision
            && self.via == other.via
            && self.permitted == other.permitted
            && self.revision == other.revision
            && self.rule_ids == other.rule_ids
            && self.reason == other.reason
            && self.monitor_decision == other.monitor_decision
            && self.choices == other.choices
            && a.purpose == b.purpose
            && a.inherited_purpose == b.inherited_purpose
            && a.resource == b.resource
            && a.subject == b.subject
            && a.action == b.action
            && a.context == b.context
            && a.supported_obligations == b.supported_obligations
    }

    /// What the record takes in the queue.
    pub fn bytes(&self) -> usize {
        if let Some(batch) = &self.batch {
            return super::RECORD_OVERHEAD + batch.bytes();
        }
        let r = &self.request;
        let list = |l: &[String]| l.iter().map(|s| s.len() + ENTRY_OVERHEAD).sum::<usize>();
        let map = |m: &BTreeMap<String, String>| {
            m.iter()
                .map(|(k, v)| k.len() + v.len() + 2 * ENTRY_OVERHEAD)
                .sum::<usize>()
        };
        super::RECORD_OVERHEAD
            + r.request_id.len()
            + r.subject.id.len()
            + r.subject.tenant.len()
            + list(&r.subject.roles)
            + r.purpose.len()
            + r.inherited_purpose.len()
            + r.action.len()
            + r.resource.category.len()
            + r.resource.owner_tenant.len()
            + r.resource.data_subject.len()
            + list(&r.resource.origin)
            + map(&r.resource.attributes)
            + r.context.customer_instruction.len()
            + map(&r.context.attributes)
            + list(&r.supported_obligations)
            + self.rule_ids.len() * 16
            + self.reason.len()
            + self.via.subject_type.as_ref().map_or(0, String::len)
            + self
                .permitted
                .as_ref()
                .map_or(0, |p| p.iter().map(|s| s.len() + ENTRY_OVERHEAD).sum())
    }

    /// The line's members (without `seq` and `hash`, which the chain
    /// adds), as JSON, within the request's budget when it has one: the
    /// members of [`LEFT_OUT_IN_TURN`] left out in turn (and named in
    /// `left_out`) until it fits, or, past them all, as small as it gets.
    pub fn to_json(&self, redaction: &Redaction) -> serde_json::Result<Vec<u8>> {
        let budget = self
            .request_bytes
            .saturating_mul(LOG_BYTES_PER_REQUEST_BYTE)
            .saturating_sub(super::chain::SEAL_BYTES + 24);
        let mut line = self.line(redaction, &[])?;
        if self.request_bytes == 0 {
            return Ok(line);
        }
        for left_out in &LEFT_OUT_IN_TURN[1..] {
            if line.len() <= budget {
                break;
            }
            line = self.line(redaction, left_out)?;
        }
        Ok(line)
    }

    /// The members a batch writes per item: the line's, but those of the
    /// batch's line (`time`, `via`, `revision`, `latency_us`, `count`,
    /// `last_time`, `redacted`).
    pub fn item_members(&self, redaction: &Redaction) -> serde_json::Result<Value> {
        let mut line = self.members(redaction, &[])?;
        line.time = String::new();
        line.redacted = None;
        let mut value = serde_json::to_value(&line)?;
        if let Value::Object(map) = &mut value {
            for key in ["time", "via", "revision", "latency_us"] {
                map.remove(key);
            }
        }
        Ok(value)
    }

    fn line(
        &self,
        redaction: &Redaction,
        left_out: &[&'static str],
    ) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&self.members(redaction, left_out)?)
    }

    fn members<'s>(
        &'s self,
        redaction: &Redaction,
        left_out: &[&'static str],
    ) -> serde_json::Result<Line<'s>> {
        let leaves = |key: &str| left_out.contains(&key);
        let r = &self.request;
        let text = |field: Field, value: &'s str| one(redaction, field, value);
        let described = redaction.described();
        let resource_id_rule = redaction
            .how(Field::ResourceId)
            .or(redaction.how(Field::ResourceAttributes));
        Ok(Line {
            time: super::rfc3339(self.time),
            request_id: text(Field::RequestId, &r.request_id),
            subject: text(Field::Subject, &r.subject.id),
            tenant: text(Field::Tenant, &r.subject.tenant).filter(|v| !v.is_empty()),
            roles: list(redaction, Field::Roles, &r.subject.roles),
            purpose: &r.purpose,
            inherited_purpose: &r.inherited_purpose,
            action: text(Field::Action, &r.action).filter(|v| !v.is_empty()),
            category: &r.resource.category,
            resource_id: r
                .resource
                .attributes
                .get("id")
                .and_then(|id| treat(resource_id_rule, id)),
            origin: list(redaction, Field::Origin, &r.resource.origin),
            owner_tenant: text(Field::OwnerTenant, &r.resource.owner_tenant)
                .filter(|v| !v.is_empty()),
            data_subject: text(Field::DataSubject, &r.resource.data_subject)
                .filter(|v| !v.is_empty()),
            deidentification: r
                .resource
                .deidentification
                .filter(|_| redaction.how(Field::Deidentification).is_none())
                .map(|d| d.as_str()),
            group_size: r
                .resource
                .group_size
                .filter(|_| redaction.how(Field::GroupSize).is_none()),
            // The id is `resource_id`'s, written once.
            resource_attributes: attributes(
                redaction.how(Field::ResourceAttributes),
                Some(How::Drop),
                &r.resource.attributes,
            ),
            customer_instruction: text(Field::CustomerInstruction, &r.context.customer_instruction)
                .filter(|v| !v.is_empty()),
            context_attributes: attributes(
                redaction.how(Field::ContextAttributes),
                redaction.how(Field::ContextAttributes),
                &r.context.attributes,
            ),
            supported_obligations: list(
                redaction,
                Field::SupportedObligations,
                &r.supported_obligations,
            )
            .filter(|l| !l.is_empty()),
            via: self.via.face,
            subject_type: self.via.subject_type.as_deref(),
            decision: self.permitted.is_none().then_some(self.decision),
            permitted: self.permitted.as_deref(),
            rule_ids: (self.permitted.is_none() && !leaves("rule_ids"))
                .then_some(&self.rule_ids[..])
                .filter(|ids| !ids.is_empty()),
            reason: (self.permitted.is_none() && !leaves("reason")).then_some(&self.reason[..]),
            revision: &self.revision,
            monitor_decision: self.monitor_decision,
            choices: self.choices.as_deref(),
            latency_us: self.latency_us,
            count: self.count,
            last_time: self.last_time.map(super::rfc3339),
            redacted: (!described.is_empty()).then_some(described),
            left_out: (!left_out.is_empty()).then(|| left_out.to_vec()),
        })
    }
}

/// A text field as the redaction says: `None` when dropped.
fn one<'a>(redaction: &Redaction, field: Field, value: &'a str) -> Option<Cow<'a, str>> {
    treat(redaction.how(field), value)
}

fn treat(how: Option<How>, value: &str) -> Option<Cow<'_, str>> {
    match how {
        None => Some(Cow::Borrowed(value)),
        Some(How::Drop) => None,
        Some(How::Hash) if value.is_empty() => Some(Cow::Borrowed("")),
        Some(How::Hash) => Some(Cow::Owned(hashed(value))),
    }
}

fn list<'a>(
    redaction: &Redaction,
    field: Field,
    values: &'a [String],
) -> Option<Vec<Cow<'a, str>>> {
    let how = redaction.how(field);
    if how == Some(How::Drop) {
        return None;
    }
    values.iter().map(|v| treat(how, v)).collect()
}

/// A map whose values are treated as `how` says, but `id`, which is
/// treated as `id_how` (the resource id).
fn attributes<'a>(
    how: Option<How>,
    id_how: Option<How>,
    values: &'a BTreeMap<String, String>,
) -> Option<BTreeMap<&'a str, Cow<'a, str>>> {
    if how == Some(How::Drop) || values.is_empty() {
        return None;
    }
    let map: BTreeMap<&str, Cow<'_, str>> = values
        .iter()
        .filter_map(|(k, v)| {
            let rule = if k == "id" { id_how.or(how) } else { how };
            treat(rule, v).map(|v| (k.as_str(), v))
        })
        .collect();
    (!map.is_empty()).then_some(map)
}

/// A decision line's members, in the order they are written.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(skip_serializing_if = "is_none_or_blank")]
    request_id: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "is_none_or_empty")]
    roles: Option<Vec<Cow<'a, str>>>,
    purpose: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    inherited_purpose: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<Cow<'a, str>>,
    category: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_id: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "is_none_or_empty")]
    origin: Option<Vec<Cow<'a, str>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_tenant: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_subject: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deidentification: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_attributes: Option<BTreeMap<&'a str, Cow<'a, str>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_instruction: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context_attributes: Option<BTreeMap<&'a str, Cow<'a, str>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    supported_obligations: Option<Vec<Cow<'a, str>>>,
    via: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<Decision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permitted: Option<&'a [Arc<str>]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule_ids: Option<&'a [Arc<str>]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    revision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    monitor_decision: Option<Decision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    choices: Option<&'a crate::engine::ChoiceFacts>,
    latency_us: u64,
    #[serde(skip_serializing_if = "is_one")]
    count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redacted: Option<BTreeMap<&'static str, &'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    left_out: Option<Vec<&'static str>>,
}

fn is_none_or_blank(v: &Option<Cow<'_, str>>) -> bool {
    v.as_deref().is_none_or(str::is_empty)
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

fn is_none_or_empty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_none_or(Vec::is_empty)
}
