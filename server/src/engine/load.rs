//! Strict loading of policy files (version 1) into a [`Policy`].
//!
//! Loading runs in two passes over every file: decode each file's shape
//! (unknown keys, wrong types, bad ids), then resolve names across all files
//! (parents, unknown purposes and categories, duplicate ids, settings). Every
//! problem of every pass is collected; nothing is built unless there are
//! none.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::decode::{Decoder, id_problem};
use super::diagnostic::{Diagnostic, Diagnostics, Span};
use super::model::{
    Claim, Condition, Deidentification, Effect, Mode, NodeIdx, Obligation, Presence, Rule,
    Settings, StateTest, Taxonomy, parent_id,
};
use super::policy::Policy;
use super::suggest;
use super::yaml::{self, Node, Value};

/// One policy file's name (for diagnostics) and text.
#[derive(Debug, Clone, Copy)]
pub struct PolicySource<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

/// The only policy format version this engine reads.
pub const POLICY_VERSION: u64 = 1;

/// Conditions nest no deeper than this.
const MAX_CONDITION_DEPTH: usize = 32;

const TOP_KEYS: &[&str] = &[
    "version",
    "name",
    "description",
    "settings",
    "purposes",
    "dataCategories",
    "rules",
    "claims",
];
const SETTING_KEYS: &[&str] = &["minAggregationGroupSize", "decisionTtlSeconds"];
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

/// Loads one or more files that together form one policy.
pub fn load(sources: &[PolicySource<'_>]) -> Result<Policy, Diagnostics> {
    super::suggest::budgeted(|| load_within_budget(sources))
}

/// Largest policy file, and largest policy (all files together): a larger
/// one is refused with its size before it is parsed.
pub const MAX_POLICY_FILE_BYTES: usize = 128 * 1024;
pub const MAX_POLICY_BYTES: usize = 512 * 1024;

/// The error of a policy file of `size` bytes, past
/// [`MAX_POLICY_FILE_BYTES`].
pub fn file_too_large(file: &str, size: u64) -> Diagnostic {
    Diagnostic::new(
        file,
        Span::default(),
        format!(
            "the file is {size} bytes; a policy file may be at most {MAX_POLICY_FILE_BYTES} bytes (128 KiB)"
        ),
    )
}

/// The size errors of `sources`, if any is too large.
fn too_large(sources: &[PolicySource<'_>]) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = sources
        .iter()
        .filter(|s| s.text.len() > MAX_POLICY_FILE_BYTES)
        .map(|s| file_too_large(s.name, s.text.len() as u64))
        .collect();
    let total: usize = sources.iter().map(|s| s.text.len()).sum();
    if out.is_empty() && total > MAX_POLICY_BYTES {
        out.push(Diagnostic::new(
            sources.first().map_or("<policy>", |s| s.name),
            Span::default(),
            format!(
                "the policy's files hold {total} bytes together; a policy may be at most {MAX_POLICY_BYTES} bytes (512 KiB)"
            ),
        ));
    }
    out
}

fn load_within_budget(sources: &[PolicySource<'_>]) -> Result<Policy, Diagnostics> {
    let oversized = too_large(sources);
    if !oversized.is_empty() {
        return Err(Diagnostics(oversized));
    }
    let mut diagnostics = Vec::new();
    let mut files = Vec::with_capacity(sources.len());
    for source in sources {
        let (root, problems) = yaml::parse_lenient(source.name, source.text);
        diagnostics.extend(problems);
        if let Some(root) = root {
            let mut decoder = Decoder::new(source.name);
            let file = decode_file(&mut decoder, &root);
            diagnostics.extend(decoder.sink.diagnostics);
            files.push(file);
        }
    }
    if sources.is_empty() {
        diagnostics.push(Diagnostic::new(
            "<policy>",
            Span::default(),
            "no policy files were given",
        ));
    }
    let resolved = resolve(&files, &mut diagnostics);
    if !diagnostics.is_empty() {
        // Stable, readable order: by file as given, then position.
        let order: HashMap<&str, usize> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name, i))
            .collect();
        diagnostics.sort_by_key(|d| (order.get(&*d.file).copied().unwrap_or(usize::MAX), d.span));
        diagnostics.dedup();
        return Err(Diagnostics(diagnostics));
    }
    match resolved {
        Some(r) => Ok(Policy::new(
            r.name,
            r.description,
            r.settings,
            r.purposes,
            r.categories,
            r.rules,
            r.claims,
        )),
        None => Err(Diagnostics(vec![Diagnostic::new(
            sources.first().map_or("<policy>", |s| s.name),
            Span::default(),
            "the policy could not be loaded",
        )])),
    }
}

/// A declared purpose or data category.
#[derive(Debug)]
struct Declaration {
    id: String,
    span: Span,
    description: String,
}

/// A bound that is a number or the name of a setting.
#[derive(Debug)]
enum Bound {
    Number(u64),
    Setting(String, Span),
}

/// A condition as written, before names are resolved.
#[derive(Debug)]
enum ConditionDoc {
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

#[derive(Debug)]
struct RuleDoc {
    span: Span,
    id: String,
    description: String,
    effect: Effect,
    purposes: Vec<(String, Span)>,
    categories: Vec<(String, Span)>,
    when: Option<ConditionDoc>,
    unless: Option<ConditionDoc>,
    obligations: Vec<Obligation>,
    mode: Mode,
}

/// What one file says, shape-checked.
#[derive(Debug, Default)]
struct FileDoc {
    file: String,
    version: Option<Span>,
    name: Option<(String, Span)>,
    /// Whether the file has a `name` key at all (valid or not).
    names_policy: bool,
    /// Whether the file is a mapping; if not, its missing keys are noise.
    is_mapping: bool,
    description: Option<String>,
    settings: Vec<(String, u64, Span)>,
    purposes: Vec<Declaration>,
    categories: Vec<Declaration>,
    rules: Vec<RuleDoc>,
    /// `Some` when the file has a `claims` section.
    claims: Option<Vec<ClaimDoc>>,
}

/// A `claims` entry as written.
#[derive(Debug)]
struct ClaimDoc {
    id: String,
    span: Span,
    subjects: Vec<String>,
    purposes: Vec<(String, Span)>,
}

fn decode_claims(d: &mut Decoder<'_>, node: &Node) -> Vec<ClaimDoc> {
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

fn decode_file(d: &mut Decoder<'_>, root: &Node) -> FileDoc {
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

fn declarations(d: &mut Decoder<'_>, node: &Node, kind: &str) -> Vec<Declaration> {
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

fn decode_rule(d: &mut Decoder<'_>, node: &Node, position: usize) -> Option<RuleDoc> {
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

fn obligations(d: &mut Decoder<'_>, node: &Node, what: &str) -> Vec<Obligation> {
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

fn condition(d: &mut Decoder<'_>, node: &Node, what: &str, depth: usize) -> Option<ConditionDoc> {
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

fn deidentification(d: &mut Decoder<'_>, node: &Node, what: &str) -> Option<StateTest> {
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

fn group_size(d: &mut Decoder<'_>, node: &Node, what: &str) -> Option<Bound> {
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

fn subject(d: &mut Decoder<'_>, node: &Node, what: &str) -> Option<ConditionDoc> {
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

fn attribute_tests(
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

/// Everything needed to build the policy, names resolved.
struct Resolved {
    name: String,
    description: String,
    settings: Settings,
    purposes: Taxonomy,
    categories: Taxonomy,
    rules: Vec<Rule>,
    claims: Option<Vec<Claim>>,
}

/// Claims of every file that has a `claims` section, names resolved.
fn resolve_claims(
    files: &[FileDoc],
    purposes: &Taxonomy,
    rule_at: &FirstSeen<'_>,
    out: &mut Vec<Diagnostic>,
) -> Option<Vec<Claim>> {
    if files.iter().all(|f| f.claims.is_none()) {
        return None;
    }
    let mut seen = FirstSeen::default();
    let mut claims = Vec::new();
    for f in files {
        for doc in f.claims.iter().flatten() {
            if let Some(first) = seen.record(&doc.id, &f.file, doc.span) {
                out.push(Diagnostic::new(
                    &f.file,
                    doc.span,
                    format!("duplicate claim id `{}` (first defined at {first})", doc.id),
                ));
                continue;
            }
            // A denial names the claims that bound the subject where an
            // answer names rules: one id must not mean both.
            if let Some(rule) = rule_at.place(&doc.id) {
                out.push(Diagnostic::new(
                    &f.file,
                    doc.span,
                    format!(
                        "claim id `{}` is also the id of the rule at {rule}; answers name claims and rules alike in `ruleIds`, so give one of them another id",
                        doc.id
                    ),
                ));
            }
            let mut purpose_idx = Vec::new();
            for (p, span) in &doc.purposes {
                match purposes.lookup(p) {
                    Some(idx) => purpose_idx.push(idx),
                    None => {
                        let hint = suggest::did_you_mean(p, purposes.ids());
                        out.push(Diagnostic::new(
                            &f.file,
                            *span,
                            format!("claim `{}`: unknown purpose `{p}`{hint}", doc.id),
                        ));
                    }
                }
            }
            claims.push(Claim {
                id: Arc::from(doc.id.as_str()),
                subjects: doc.subjects.clone(),
                purposes: doc
                    .purposes
                    .iter()
                    .map(|(p, _)| Arc::from(p.as_str()))
                    .collect(),
                purpose_idx,
            });
        }
    }
    Some(claims)
}

fn resolve(files: &[FileDoc], out: &mut Vec<Diagnostic>) -> Option<Resolved> {
    // The policy name: required once, equal wherever repeated.
    let mut name: Option<(&str, &str, Span)> = None;
    for f in files {
        if let Some((n, span)) = &f.name {
            match name {
                None => name = Some((n, &f.file, *span)),
                Some((first, first_file, first_span)) if first != n => out.push(Diagnostic::new(
                    &f.file,
                    *span,
                    format!(
                        "policy name `{n}` conflicts with `{first}` at {first_file}:{}:{}",
                        first_span.line, first_span.column
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    // A file whose `name` is invalid, or that is no mapping at all, has
    // been reported already.
    if files.iter().all(|f| f.is_mapping) && !files.iter().any(|f| f.names_policy) {
        if let Some(f) = files.first() {
            out.push(Diagnostic::new(
                &f.file,
                Span::default(),
                "missing policy `name`",
            ));
        }
    }
    let description = files
        .iter()
        .filter_map(|f| f.description.clone())
        .collect::<Vec<_>>()
        .join("\n");

    // Settings: defaults, overridden once; a different value elsewhere is a conflict.
    let mut settings = Settings::default();
    let mut set_at: HashMap<&str, (u64, &str, Span)> = HashMap::new();
    for f in files {
        for (key, value, span) in &f.settings {
            if let Some((prev, prev_file, prev_span)) = set_at.get(key.as_str()) {
                if prev != value {
                    out.push(Diagnostic::new(
                        &f.file,
                        *span,
                        format!(
                            "setting `{key}` is {value} here but {prev} at {prev_file}:{}:{}",
                            prev_span.line, prev_span.column
                        ),
                    ));
                }
                continue;
            }
            set_at.insert(key, (*value, &f.file, *span));
            match key.as_str() {
                "minAggregationGroupSize" => settings.min_aggregation_group_size = *value,
                "decisionTtlSeconds" => {
                    settings.decision_ttl_seconds = u32::try_from(*value).unwrap_or(u32::MAX);
                }
                _ => {}
            }
        }
    }
    let setting_value = |name: &str| -> Option<u64> {
        match name {
            "minAggregationGroupSize" => Some(settings.min_aggregation_group_size),
            "decisionTtlSeconds" => Some(u64::from(settings.decision_ttl_seconds)),
            _ => None,
        }
    };

    let purposes = taxonomy(files, "purpose", |f| &f.purposes, out);
    let categories = taxonomy(files, "data category", |f| &f.categories, out);

    // Rules: unique ids, resolved names.
    let mut rule_at = FirstSeen::default();
    let mut rules = Vec::new();
    for f in files {
        for doc in &f.rules {
            let duplicate = rule_at.record(&doc.id, &f.file, doc.span);
            if let Some(first) = &duplicate {
                out.push(Diagnostic::new(
                    &f.file,
                    doc.span,
                    format!("duplicate rule id `{}` (first defined at {first})", doc.id),
                ));
            }
            // A duplicate is still resolved, so its other problems are
            // reported with it; it is never kept.
            let mut r = Resolver {
                file: &f.file,
                rule: &doc.id,
                purposes: &purposes,
                categories: &categories,
                setting_value: &setting_value,
                out,
            };
            if let Some(rule) = r.rule(doc)
                && duplicate.is_none()
            {
                rules.push(rule);
            }
        }
    }
    let claims = resolve_claims(files, &purposes, &rule_at, out);
    let (name, _, _) = name?;
    Some(Resolved {
        name: name.to_string(),
        description,
        settings,
        purposes,
        categories,
        rules,
        claims,
    })
}

/// Where each id was first written, so a later one is reported as a
/// duplicate that names the first.
#[derive(Debug, Default)]
struct FirstSeen<'a>(HashMap<&'a str, (&'a str, Span)>);

impl<'a> FirstSeen<'a> {
    /// Records `id`; if it was written before, returns where, as
    /// `file:line:column`.
    fn record(&mut self, id: &'a str, file: &'a str, span: Span) -> Option<String> {
        let first = self.place(id);
        if first.is_none() {
            self.0.insert(id, (file, span));
        }
        first
    }

    /// Where `id` was first written, as `file:line:column`.
    fn place(&self, id: &str) -> Option<String> {
        self.0
            .get(id)
            .map(|(file, at)| format!("{file}:{}:{}", at.line, at.column))
    }

    fn contains(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }

    fn ids(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.0.keys().copied()
    }
}

/// Merges the declarations of all files into one tree, reporting duplicates
/// and ids whose parent is not declared.
fn taxonomy(
    files: &[FileDoc],
    kind: &'static str,
    decls: impl Fn(&FileDoc) -> &Vec<Declaration>,
    out: &mut Vec<Diagnostic>,
) -> Taxonomy {
    let mut seen = FirstSeen::default();
    let mut all = Vec::new();
    for f in files {
        for decl in decls(f) {
            if let Some(first) = seen.record(&decl.id, &f.file, decl.span) {
                out.push(Diagnostic::new(
                    &f.file,
                    decl.span,
                    format!("{kind} `{}` is already declared at {first}", decl.id),
                ));
                continue;
            }
            all.push((&f.file, decl));
        }
    }
    let mut declared = Vec::with_capacity(all.len());
    for (file, decl) in all {
        if let Some(parent) = parent_id(&decl.id) {
            if !seen.contains(parent) {
                let hint = suggest::did_you_mean(parent, seen.ids());
                out.push(Diagnostic::new(
                    file,
                    decl.span,
                    format!(
                        "{kind} `{}` needs its parent `{parent}` declared too{hint}",
                        decl.id
                    ),
                ));
            }
        }
        declared.push((decl.id.clone(), decl.description.clone()));
    }
    Taxonomy::new(kind, declared)
}

struct Resolver<'a, 'o> {
    file: &'a str,
    rule: &'a str,
    purposes: &'a Taxonomy,
    categories: &'a Taxonomy,
    setting_value: &'a dyn Fn(&str) -> Option<u64>,
    out: &'o mut Vec<Diagnostic>,
}

impl Resolver<'_, '_> {
    fn error(&mut self, span: Span, message: String) {
        self.out.push(Diagnostic::new(self.file, span, message));
    }

    fn ids(&mut self, tree: &Taxonomy, ids: &[(String, Span)]) -> Option<Vec<NodeIdx>> {
        let mut out = Vec::with_capacity(ids.len());
        let mut ok = true;
        for (id, span) in ids {
            match tree.lookup(id) {
                Some(idx) => out.push(idx),
                None => {
                    let hint = suggest::did_you_mean(id, tree.ids());
                    self.error(
                        *span,
                        format!("rule `{}`: unknown {} `{id}`{hint}", self.rule, tree.kind()),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn rule(&mut self, doc: &RuleDoc) -> Option<Rule> {
        let purpose_idx = self.ids(self.purposes, &doc.purposes);
        let category_idx = self.ids(self.categories, &doc.categories);
        let when = doc.when.as_ref().map(|c| self.condition(c));
        let unless = doc.unless.as_ref().map(|c| self.condition(c));
        let when = match when {
            Some(c) => Some(c?),
            None => None,
        };
        let unless = match unless {
            Some(c) => Some(c?),
            None => None,
        };
        Some(Rule {
            id: Arc::from(doc.id.as_str()),
            description: doc.description.clone(),
            effect: doc.effect,
            purposes: doc
                .purposes
                .iter()
                .map(|(p, _)| Arc::from(p.as_str()))
                .collect(),
            data_categories: doc
                .categories
                .iter()
                .map(|(c, _)| Arc::from(c.as_str()))
                .collect(),
            when,
            unless,
            obligations: doc.obligations.clone(),
            mode: doc.mode,
            purpose_idx: purpose_idx?,
            category_idx: category_idx?,
        })
    }

    fn condition(&mut self, doc: &ConditionDoc) -> Option<Condition> {
        Some(match doc {
            ConditionDoc::SameTenant(b) => Condition::SameTenant(*b),
            ConditionDoc::Deidentification(t) => Condition::Deidentification(*t),
            ConditionDoc::GroupSizeAtLeast(Bound::Number(n)) => Condition::GroupSizeAtLeast {
                min: *n,
                setting: None,
            },
            ConditionDoc::GroupSizeAtLeast(Bound::Setting(name, span)) => {
                match (self.setting_value)(name) {
                    Some(min) => Condition::GroupSizeAtLeast {
                        min,
                        setting: Some(name.clone()),
                    },
                    None => {
                        let hint = suggest::did_you_mean(name, SETTING_KEYS.iter().copied());
                        self.error(
                            *span,
                            format!(
                                "rule `{}`: `groupSize.atLeast` names unknown setting `{name}`{hint}",
                                self.rule
                            ),
                        );
                        return None;
                    }
                }
            }
            ConditionDoc::OriginWithin(ids) => Condition::OriginWithin {
                categories: ids.iter().map(|(c, _)| Arc::from(c.as_str())).collect(),
                category_idx: self.ids(self.categories, ids)?,
            },
            ConditionDoc::SubjectId(v) => Condition::SubjectId(v.clone()),
            ConditionDoc::SubjectRole(v) => Condition::SubjectRole(v.clone()),
            ConditionDoc::Context(key, values) => Condition::Context {
                key: key.clone(),
                values: values.clone(),
            },
            ConditionDoc::Resource(key, values) => Condition::Resource {
                key: key.clone(),
                values: values.clone(),
            },
            ConditionDoc::CustomerInstruction(p) => Condition::CustomerInstruction(*p),
            ConditionDoc::All(parts) => Condition::All(self.conditions(parts)?),
            ConditionDoc::Any(parts) => Condition::Any(self.conditions(parts)?),
            ConditionDoc::Not(inner) => Condition::Not(Box::new(self.condition(inner)?)),
        })
    }

    fn conditions(&mut self, parts: &[ConditionDoc]) -> Option<Vec<Condition>> {
        // Resolve every part so every problem is reported.
        let resolved: Vec<Option<Condition>> = parts.iter().map(|p| self.condition(p)).collect();
        resolved.into_iter().collect()
    }
}
