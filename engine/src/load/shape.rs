//! The first pass: each file's shape (unknown keys, wrong types, bad ids),
//! decoded into what it says before any name is resolved.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::condition::{ConditionDoc, condition};
use crate::decode::{Decoder, id_problem};
use crate::diagnostic::Span;
use crate::model::{Effect, Mode, Obligation, POLICY_VERSION};
use crate::suggest;
use crate::yaml::{Node, Value};

const TOP_KEYS: &[&str] = &[
    "version",
    "name",
    "description",
    "settings",
    "purposes",
    "dataCategories",
    "rules",
    "claims",
    "choices",
    "restriction",
];

pub(super) const SETTING_KEYS: &[&str] = &["minAggregationGroupSize", "decisionTtlSeconds"];

const RULE_KEYS: &[&str] = &[
    "id",
    "description",
    "effect",
    "purposes",
    "dataCategories",
    "when",
    "unless",
    "obligations",
    "mode",
];

/// A declared purpose or data category.
#[derive(Debug)]
pub(super) struct Declaration {
    pub(super) id: String,
    pub(super) span: Span,
    pub(super) description: String,
}

#[derive(Debug)]
pub(super) struct RuleDoc {
    pub(super) span: Span,
    pub(super) id: String,
    pub(super) description: String,
    pub(super) effect: Effect,
    pub(super) purposes: Vec<(String, Span)>,
    pub(super) categories: Vec<(String, Span)>,
    pub(super) when: Option<ConditionDoc>,
    pub(super) unless: Option<ConditionDoc>,
    pub(super) obligations: Vec<Obligation>,
    pub(super) mode: Mode,
}

/// What one file says, shape-checked.
#[derive(Debug, Default)]
pub(super) struct FileDoc {
    pub(super) file: String,
    pub(super) version: Option<Span>,
    pub(super) name: Option<(String, Span)>,
    /// Whether the file has a `name` key at all (valid or not).
    pub(super) names_policy: bool,
    /// Whether the file is a mapping; if not, its missing keys are noise.
    pub(super) is_mapping: bool,
    pub(super) description: Option<String>,
    pub(super) settings: Vec<(String, u64, Span)>,
    pub(super) purposes: Vec<Declaration>,
    pub(super) categories: Vec<Declaration>,
    pub(super) rules: Vec<RuleDoc>,
    /// `Some` when the file has a `claims` section.
    pub(super) claims: Option<Vec<ClaimDoc>>,
    pub(super) choices: Vec<super::choices::ChoiceDoc>,
    pub(super) restriction: Option<super::choices::RestrictionDoc>,
}

/// A `claims` entry as written.
#[derive(Debug)]
pub(super) struct ClaimDoc {
    pub(super) id: String,
    pub(super) span: Span,
    pub(super) subjects: Vec<String>,
    pub(super) purposes: Vec<(String, Span)>,
}

pub(super) fn decode_claims(d: &mut Decoder<'_>, node: &Node) -> Vec<ClaimDoc> {
    let Some(items) = d.seq(node, "`claims`") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let what = format!("claim #{}", i + 1);
        let Some(f) = d.fields(item, &what, &["id", "description", "subjects", "purposes"]) else {
            continue;
        };
        let id = match f.get("id") {
            Some(n) => d.id(n, "claim id"),
            None => {
                d.error(item.span, format!("{what} has no `id`"));
                None
            }
        };
        if let Some(n) = f.get("description") {
            d.string(n, &format!("{what}: `description`"));
        }
        let subjects = match f.get("subjects") {
            Some(n) => d
                .strings(n, &format!("{what}: `subjects`"))
                .unwrap_or_default(),
            None => {
                d.error(
                    item.span,
                    format!("{what} needs `subjects` (ids, SPIFFE IDs or globs)"),
                );
                Vec::new()
            }
        };
        if subjects.is_empty() && f.get("subjects").is_some() {
            d.error(item.span, format!("{what}: `subjects` must not be empty"));
        }
        let purposes = match f.get("purposes") {
            Some(n) => d.id_list(n, &format!("{what}: `purposes`")),
            None => {
                d.error(item.span, format!("{what} needs `purposes`"));
                Vec::new()
            }
        };
        if let Some((id, span)) = id {
            out.push(ClaimDoc {
                id,
                span,
                subjects,
                purposes,
            });
        }
    }
    out
}

pub(super) fn decode_file(d: &mut Decoder<'_>, root: &Node) -> FileDoc {
    let mut doc = FileDoc {
        file: d.sink.file.to_string(),
        ..FileDoc::default()
    };
    if root.value == Value::Null {
        d.error(root.span, "the policy file is empty");
        return doc;
    }
    let Some(top) = d.fields(root, "policy", TOP_KEYS) else {
        return doc;
    };
    doc.is_mapping = true;
    match top.get("version") {
        None => d.error(
            top.span,
            "missing `version` (this engine reads `version: 1`)",
        ),
        Some(node) => {
            if let Some(v) = d.uint(node, "`version`", u64::MAX) {
                if v == POLICY_VERSION {
                    doc.version = Some(node.span);
                } else {
                    d.error(
                        node.span,
                        format!("unsupported policy version {v} (this engine reads version {POLICY_VERSION})"),
                    );
                }
            }
        }
    }
    if let Some(node) = top.get("name") {
        doc.names_policy = true;
        doc.name = d.id(node, "policy `name`");
    }
    if let Some(node) = top.get("description") {
        doc.description = d.string(node, "policy `description`");
    }
    if let Some(node) = top.get("settings") {
        if let Some(settings) = d.fields(node, "`settings`", SETTING_KEYS) {
            for (key, value) in settings.entries() {
                if !SETTING_KEYS.contains(&key.name.as_str()) {
                    continue;
                }
                let max = if key.name == "decisionTtlSeconds" {
                    86_400
                } else {
                    u64::from(u32::MAX)
                };
                if let Some(v) = d.uint(value, &format!("setting `{}`", key.name), max) {
                    doc.settings.push((key.name.clone(), v, value.span));
                }
            }
        }
    }
    if let Some(node) = top.get("purposes") {
        doc.purposes = declarations(d, node, "purpose");
    }
    if let Some(node) = top.get("dataCategories") {
        doc.categories = declarations(d, node, "data category");
    }
    if let Some(node) = top.get("choices") {
        doc.choices = super::choices::decode_choices(d, node);
    }
    if let Some(node) = top.get("restriction") {
        doc.restriction = super::choices::decode_restriction(d, node);
    }
    if let Some(node) = top.get("claims") {
        doc.claims = Some(decode_claims(d, node));
    }
    if let Some(node) = top.get("rules") {
        if let Some(items) = d.seq(node, "`rules`") {
            for (i, item) in items.iter().enumerate() {
                if let Some(rule) = decode_rule(d, item, i) {
                    doc.rules.push(rule);
                }
            }
        }
    }
    doc
}

pub(super) fn declarations(d: &mut Decoder<'_>, node: &Node, kind: &str) -> Vec<Declaration> {
    let plural = if kind == "purpose" {
        "`purposes`"
    } else {
        "`dataCategories`"
    };
    let Some(entries) = d.map(node, &format!("{plural} (id: description)")) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        if let Some(problem) = id_problem(&key.name) {
            if key.name.is_empty() {
                d.error(key.span, format!("a {kind} id {problem}"));
            } else {
                d.error(key.span, format!("{kind} id `{}` {problem}", key.name));
            }
            continue;
        }
        let Some(description) = d.text(value, &format!("the description of {kind} `{}`", key.name))
        else {
            continue;
        };
        out.push(Declaration {
            id: key.name.clone(),
            span: key.span,
            description,
        });
    }
    out
}

pub(super) fn decode_rule(d: &mut Decoder<'_>, node: &Node, position: usize) -> Option<RuleDoc> {
    // Read the id first so every later message can name the rule.
    let id_node = match &node.value {
        Value::Map(entries) => entries.iter().find(|(k, _)| k.name == "id").map(|(_, v)| v),
        _ => None,
    };
    let id = id_node.and_then(|n| d.id(n, "rule id")).map(|(id, _)| id);
    let what = match &id {
        Some(id) => format!("rule `{id}`"),
        None => format!("rule #{}", position + 1),
    };
    let fields = d.fields(node, &what, RULE_KEYS)?;
    if id_node.is_none() {
        d.error(node.span, format!("{what} has no `id`"));
    }
    let description = match fields.get("description") {
        Some(n) => d
            .string(n, &format!("{what}: `description`"))
            .unwrap_or_default(),
        None => String::new(),
    };
    let effect = match fields.get("effect") {
        None => {
            d.error(
                node.span,
                format!("{what}: missing `effect` (`permit` or `deny`)"),
            );
            Effect::Permit
        }
        Some(n) => match d.string(n, &format!("{what}: `effect`")).as_deref() {
            Some("permit") => Effect::Permit,
            Some("deny") => Effect::Deny,
            Some(other) => {
                let hint = suggest::did_you_mean(other, ["permit", "deny"]);
                d.error(
                    n.span,
                    format!("{what}: unknown effect `{other}`{hint}; expected `permit` or `deny`"),
                );
                Effect::Permit
            }
            None => Effect::Permit,
        },
    };
    let purposes = match fields.get("purposes") {
        None => {
            d.error(node.span, format!("{what}: missing `purposes`"));
            Vec::new()
        }
        Some(n) => d.id_list(n, &format!("{what}: `purposes`")),
    };
    let categories = match fields.get("dataCategories") {
        None => Vec::new(),
        Some(n) => d.id_list(n, &format!("{what}: `dataCategories`")),
    };
    let when = fields
        .get("when")
        .and_then(|n| condition(d, n, &format!("{what}: `when`"), 0));
    let unless = fields
        .get("unless")
        .and_then(|n| condition(d, n, &format!("{what}: `unless`"), 0));
    let mode = match fields.get("mode") {
        None => Mode::Enforce,
        Some(n) => match d.string(n, &format!("{what}: `mode`")).as_deref() {
            Some("monitor") => Mode::Monitor,
            Some("enforce") | None => Mode::Enforce,
            Some(other) => {
                d.error(
                    n.span,
                    format!("{what}: unknown mode `{other}`; expected `enforce` or `monitor`"),
                );
                Mode::Enforce
            }
        },
    };
    let obligations = match fields.get("obligations") {
        None => Vec::new(),
        Some(n) => {
            if effect == Effect::Deny {
                d.error(
                    n.span,
                    format!("{what}: only permit rules carry obligations"),
                );
            }
            obligations(d, n, &what)
        }
    };
    Some(RuleDoc {
        span: id_node.map_or(node.span, |n| n.span),
        id: id?,
        description,
        effect,
        purposes,
        categories,
        when,
        unless,
        obligations,
        mode,
    })
}

pub(super) fn obligations(d: &mut Decoder<'_>, node: &Node, what: &str) -> Vec<Obligation> {
    let Some(items) = d.seq(node, &format!("{what}: `obligations`")) else {
        return Vec::new();
    };
    let mut out: Vec<Obligation> = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    for item in items {
        let Some(fields) = d.fields(item, &format!("{what}: obligation"), &["id", "params"]) else {
            continue;
        };
        let id = match fields.get("id") {
            Some(n) => d.id(n, &format!("{what}: obligation id")),
            None => {
                d.error(item.span, format!("{what}: an obligation needs an `id`"));
                None
            }
        };
        let params = match fields.get("params") {
            Some(n) => d.string_map(n, &format!("{what}: obligation `params`")),
            None => Some(BTreeMap::new()),
        };
        if let (Some((id, span)), Some(params)) = (id, params) {
            if !seen.insert(id.clone()) {
                d.error(span, format!("{what}: obligation `{id}` is listed twice"));
            } else {
                out.push(Obligation {
                    id: Arc::from(id),
                    params,
                });
            }
        }
    }
    out
}
