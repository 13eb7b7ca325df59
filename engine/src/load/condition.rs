//! Conditions (`when`, `unless`) as written, shape-checked.

use crate::decode::Decoder;
use crate::diagnostic::Span;
use crate::model::{Deidentification, Presence, StateTest};
use crate::suggest;
use crate::yaml::{Node, Value};

/// Conditions nest no deeper than this.
const MAX_CONDITION_DEPTH: usize = 32;

const CONDITION_KEYS: &[&str] = &[
    "sameTenant",
    "deidentification",
    "groupSize",
    "origin",
    "subject",
    "context",
    "resource",
    "customerInstruction",
    "all",
    "any",
    "not",
];

/// A bound that is a number or the name of a setting.
#[derive(Debug)]
pub(super) enum Bound {
    Number(u64),
    Setting(String, Span),
}

/// A condition as written, before names are resolved.
#[derive(Debug)]
pub(super) enum ConditionDoc {
    SameTenant(bool),
    Deidentification(StateTest),
    GroupSizeAtLeast(Bound),
    OriginWithin(Vec<(String, Span)>),
    SubjectId(Vec<String>),
    SubjectRole(Vec<String>),
    Context(String, Vec<String>),
    Resource(String, Vec<String>),
    CustomerInstruction(Presence),
    All(Vec<ConditionDoc>),
    Any(Vec<ConditionDoc>),
    Not(Box<ConditionDoc>),
}

pub(super) fn condition(
    d: &mut Decoder<'_>,
    node: &Node,
    what: &str,
    depth: usize,
) -> Option<ConditionDoc> {
    if depth >= MAX_CONDITION_DEPTH {
        d.error(
            node.span,
            format!("{what}: conditions nest deeper than {MAX_CONDITION_DEPTH} levels"),
        );
        return None;
    }
    let fields = d.fields(node, what, CONDITION_KEYS)?;
    if fields.is_empty() {
        d.error(
            node.span,
            format!("{what} is empty; name at least one condition"),
        );
        return None;
    }
    // A part that fails to decode is reported and left out; the others are
    // kept so their names are still checked.
    let mut parts = Vec::new();
    for (key, value) in fields.entries() {
        let part = match key.name.as_str() {
            "sameTenant" => d
                .bool(value, &format!("{what}: `sameTenant`"))
                .map(ConditionDoc::SameTenant),
            "deidentification" => {
                deidentification(d, value, what).map(ConditionDoc::Deidentification)
            }
            "groupSize" => group_size(d, value, what).map(ConditionDoc::GroupSizeAtLeast),
            "origin" => {
                let f = d.fields(value, &format!("{what}: `origin`"), &["within"]);
                match f.and_then(|f| f.get("within")) {
                    Some(n) => Some(ConditionDoc::OriginWithin(
                        d.id_list(n, &format!("{what}: `origin.within`")),
                    )),
                    None => {
                        d.error(
                            value.span,
                            format!("{what}: `origin` needs `within: [categories]`"),
                        );
                        None
                    }
                }
            }
            "subject" => subject(d, value, what),
            "context" | "resource" => attribute_tests(
                d,
                value,
                &format!("{what}: `{}`", key.name),
                key.name == "context",
            ),
            "customerInstruction" => match d
                .string(value, &format!("{what}: `customerInstruction`"))
                .as_deref()
            {
                Some("present") => Some(ConditionDoc::CustomerInstruction(Presence::Present)),
                Some("absent") => Some(ConditionDoc::CustomerInstruction(Presence::Absent)),
                Some(other) => {
                    d.error(
                        value.span,
                        format!("{what}: `customerInstruction` must be `present` or `absent`, found `{other}`"),
                    );
                    None
                }
                None => None,
            },
            "all" | "any" => {
                let combinator = key.name.as_str();
                match d.seq(value, &format!("{what}: `{combinator}`")) {
                    Some([]) => {
                        d.error(
                            value.span,
                            format!("{what}: `{combinator}` must list at least one condition"),
                        );
                        None
                    }
                    Some(items) => {
                        let inner: Vec<ConditionDoc> = items
                            .iter()
                            .filter_map(|n| {
                                condition(d, n, &format!("{what}: `{combinator}`"), depth + 1)
                            })
                            .collect();
                        Some(if combinator == "all" {
                            ConditionDoc::All(inner)
                        } else {
                            ConditionDoc::Any(inner)
                        })
                    }
                    None => None,
                }
            }
            "not" => condition(d, value, &format!("{what}: `not`"), depth + 1)
                .map(|c| ConditionDoc::Not(Box::new(c))),
            // Unknown keys were reported by `fields`.
            _ => None,
        };
        parts.extend(part);
    }
    if parts.len() == 1 {
        parts.pop()
    } else {
        Some(ConditionDoc::All(parts))
    }
}

pub(super) fn deidentification(d: &mut Decoder<'_>, node: &Node, what: &str) -> Option<StateTest> {
    let state = |d: &mut Decoder<'_>, n: &Node| -> Option<Deidentification> {
        let s = d.string(n, &format!("{what}: `deidentification`"))?;
        match Deidentification::parse(&s) {
            Some(state) => Some(state),
            None => {
                let names = Deidentification::ALL.map(Deidentification::as_str);
                let hint = suggest::did_you_mean(&s, names);
                d.error(
                    n.span,
                    format!(
                        "{what}: unknown de-identification state `{s}`{hint}; expected one of {}",
                        names.join(", ")
                    ),
                );
                None
            }
        }
    };
    match &node.value {
        Value::Map(_) => {
            let fields = d.fields(node, &format!("{what}: `deidentification`"), &["atLeast"])?;
            match fields.get("atLeast") {
                Some(n) => state(d, n).map(StateTest::AtLeast),
                None => {
                    d.error(
                        node.span,
                        format!("{what}: `deidentification` needs `atLeast: STATE`"),
                    );
                    None
                }
            }
        }
        _ => state(d, node).map(StateTest::Exactly),
    }
}

pub(super) fn group_size(d: &mut Decoder<'_>, node: &Node, what: &str) -> Option<Bound> {
    let fields = d.fields(node, &format!("{what}: `groupSize`"), &["atLeast"])?;
    let Some(n) = fields.get("atLeast") else {
        d.error(
            node.span,
            format!("{what}: `groupSize` needs `atLeast: N` or `atLeast: setting-name`"),
        );
        return None;
    };
    match &n.value {
        Value::String(s) if s.parse::<u64>().is_err() => Some(Bound::Setting(s.clone(), n.span)),
        _ => d
            .uint(n, &format!("{what}: `groupSize.atLeast`"), u64::MAX)
            .map(Bound::Number),
    }
}

pub(super) fn subject(d: &mut Decoder<'_>, node: &Node, what: &str) -> Option<ConditionDoc> {
    let fields = d.fields(node, &format!("{what}: `subject`"), &["id", "roles"])?;
    let mut parts = Vec::new();
    if let Some(n) = fields.get("id") {
        parts.push(ConditionDoc::SubjectId(
            d.values(n, &format!("{what}: `subject.id`"))?,
        ));
    }
    if let Some(n) = fields.get("roles") {
        parts.push(ConditionDoc::SubjectRole(
            d.values(n, &format!("{what}: `subject.roles`"))?,
        ));
    }
    match parts.len() {
        0 => {
            d.error(
                node.span,
                format!("{what}: `subject` needs `id` or `roles`"),
            );
            None
        }
        1 => parts.pop(),
        _ => Some(ConditionDoc::All(parts)),
    }
}

pub(super) fn attribute_tests(
    d: &mut Decoder<'_>,
    node: &Node,
    what: &str,
    context: bool,
) -> Option<ConditionDoc> {
    let entries = d.map(node, &format!("{what} (attribute: value)"))?;
    if entries.is_empty() {
        d.error(
            node.span,
            format!("{what} must name at least one attribute"),
        );
        return None;
    }
    let mut parts = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let values = d.values(value, &format!("{what} `{}`", key.name))?;
        parts.push(if context {
            ConditionDoc::Context(key.name.clone(), values)
        } else {
            ConditionDoc::Resource(key.name.clone(), values)
        });
    }
    if parts.len() == 1 {
        parts.pop()
    } else {
        Some(ConditionDoc::All(parts))
    }
}
