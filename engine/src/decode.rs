//! Typed reading of [`Node`] trees that reports every problem to a [`Sink`]
//! instead of stopping at the first, and rejects unknown keys.

use super::diagnostic::{Diagnostics, Sink, Span};
use super::suggest;
use super::yaml::{self, Key, Node, Value};

/// The known keys of one mapping, checked.
#[derive(Debug)]
pub struct Fields<'n> {
    entries: &'n [(Key, Node)],
    pub span: Span,
}

impl<'n> Fields<'n> {
    pub fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(_, v)| v)
    }

    /// The first of several accepted spellings (`owner_tenant`, `ownerTenant`).
    pub fn get_any(&self, names: &[&str]) -> Option<&'n Node> {
        names.iter().find_map(|n| self.get(n))
    }

    /// The one of several accepted spellings that is given; with two given,
    /// an error (which one counts would be a guess) and nothing.
    pub fn get_one(&self, d: &mut Decoder<'_>, names: &[&str]) -> Option<&'n Node> {
        let given: Vec<(&str, &'n Node)> = names
            .iter()
            .filter_map(|n| self.get(n).map(|node| (*n, node)))
            .collect();
        match given.as_slice() {
            [] => None,
            [(_, node)] => Some(node),
            [(first, _), (second, node), ..] => {
                d.error(
                    node.span,
                    format!("`{first}` and `{second}` are the same field; give it once"),
                );
                None
            }
        }
    }

    pub fn entries(&self) -> &'n [(Key, Node)] {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The strict reader of YAML (or JSON) documents that policies, case
/// files and the sidecar's routes file share: it checks a document's
/// shape value by value, collects every problem with its `file:line:column`
/// and gives the decoded value only when there is none.
///
/// ```
/// use purposegate_engine::Decoder;
///
/// let (mut d, root) = Decoder::read("ports.yaml", "port: 80\nname: web\n").unwrap();
/// let port = d.fields(&root, "ports file", &["port"]).and_then(|f| {
///     let node = f.get("port")?;
///     d.uint(node, "`port`", 65_535)
/// });
/// let problems = d.finish(port).unwrap_err();
/// assert_eq!(
///     problems.to_string(),
///     "ports.yaml:2:1: ports file: unknown key `name`; expected one of `port`"
/// );
/// ```
#[derive(Debug)]
pub struct Decoder<'f> {
    pub(crate) sink: Sink<'f>,
}

impl<'f> Decoder<'f> {
    pub(crate) fn new(file: &'f str) -> Self {
        Decoder {
            sink: Sink::new(file),
        }
    }

    /// Reads `text`, one YAML document of `file`: a decoder, and the
    /// document's root to decode. Text that is not YAML, a key written
    /// twice, an anchor or an alias is refused with every such problem.
    pub fn read(file: &'f str, text: &str) -> Result<(Self, Node), Diagnostics> {
        let root = yaml::parse(file, text).map_err(Diagnostics)?;
        Ok((Decoder::new(file), root))
    }

    /// What was decoded, unless a problem was reported on the way: then
    /// every problem, in line order.
    pub fn finish<T>(self, value: T) -> Result<T, Diagnostics> {
        let mut problems = self.sink.diagnostics;
        if problems.is_empty() {
            return Ok(value);
        }
        problems.sort_by_key(|d| (d.span.line, d.span.column));
        Err(Diagnostics(problems))
    }

    pub fn error(&mut self, span: Span, message: impl Into<String>) {
        self.sink.error(span, message);
    }

    fn expected(&mut self, node: &Node, what: &str, expected: &str) {
        self.error(
            node.span,
            format!("{what} must be {expected}, found {}", node.value.kind()),
        );
    }

    /// A mapping whose keys are all in `known`; unknown keys are reported
    /// with the nearest known one.
    pub fn fields<'n>(&mut self, node: &'n Node, what: &str, known: &[&str]) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            self.expected(node, what, "a mapping");
            return None;
        };
        for (key, _) in entries {
            if !known.contains(&key.name.as_str()) {
                let hint = suggest::did_you_mean(&key.name, known.iter().copied());
                let hint = if hint.is_empty() {
                    format!("; expected one of {}", quoted_list(known))
                } else {
                    hint
                };
                self.error(
                    key.span,
                    format!("{what}: unknown key `{}`{hint}", key.name),
                );
            }
        }
        Some(Fields {
            entries,
            span: node.span,
        })
    }

    /// A mapping with any string keys.
    pub fn map<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [(Key, Node)]> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            _ => {
                self.expected(node, what, "a mapping");
                None
            }
        }
    }

    pub fn seq<'n>(&mut self, node: &'n Node, what: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.expected(node, what, "a list");
                None
            }
        }
    }

    /// A string, possibly empty.
    pub fn string(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::String(s) => Some(s.clone()),
            _ => {
                self.expected(node, what, "a string");
                None
            }
        }
    }

    /// A non-empty string without surrounding whitespace.
    pub fn text(&mut self, node: &Node, what: &str) -> Option<String> {
        let s = self.string(node, what)?;
        if s.trim().is_empty() {
            self.error(node.span, format!("{what} must not be empty"));
            return None;
        }
        Some(s.trim().to_string())
    }

    /// An id: non-empty, no whitespace, dotted segments of letters, digits,
    /// `-` and `_`.
    pub fn id(&mut self, node: &Node, what: &str) -> Option<(String, Span)> {
        let s = self.string(node, what)?;
        match id_problem(&s) {
            None => Some((s, node.span)),
            Some(problem) if s.is_empty() => {
                self.error(node.span, format!("{what} {problem}"));
                None
            }
            Some(problem) => {
                self.error(node.span, format!("{what} `{s}` {problem}"));
                None
            }
        }
    }

    /// A non-empty list of ids. Bad items are reported and left out, so
    /// the good ones can still be checked against the policy.
    pub fn id_list(&mut self, node: &Node, what: &str) -> Vec<(String, Span)> {
        let items = match &node.value {
            Value::Seq(items) => items,
            _ => {
                self.expected(node, what, "a list");
                return Vec::new();
            }
        };
        if items.is_empty() {
            self.error(node.span, format!("{what} must not be empty"));
        }
        let mut out: Vec<(String, Span)> = Vec::with_capacity(items.len());
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        for item in items {
            if let Some(id) = self.id(item, what) {
                if seen.contains(&id.0) {
                    self.error(item.span, format!("{what}: `{}` is listed twice", id.0));
                } else {
                    seen.insert(id.0.clone());
                    out.push(id);
                }
            }
        }
        out
    }

    /// `value | [values]`: one or more scalar values, as strings.
    pub fn values(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        let one = |d: &mut Self, n: &Node| -> Option<String> {
            match &n.value {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::String(_) => {
                    d.error(n.span, format!("{what} must not be empty"));
                    None
                }
                Value::Bool(_) | Value::Int(_) | Value::Float(_) => Some(n.value.to_string()),
                _ => {
                    d.expected(n, what, "a value or a list of values");
                    None
                }
            }
        };
        match &node.value {
            Value::Seq(items) => {
                if items.is_empty() {
                    self.error(node.span, format!("{what} must not be an empty list"));
                    return None;
                }
                let values: Vec<Option<String>> = items.iter().map(|n| one(self, n)).collect();
                values.into_iter().collect()
            }
            _ => one(self, node).map(|v| vec![v]),
        }
    }

    /// A list of plain strings (each non-empty).
    pub fn strings(&mut self, node: &Node, what: &str) -> Option<Vec<String>> {
        let items = self.seq(node, what)?;
        let values: Vec<Option<String>> = items.iter().map(|n| self.text(n, what)).collect();
        values.into_iter().collect()
    }

    pub fn bool(&mut self, node: &Node, what: &str) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.expected(node, what, "`true` or `false`");
                None
            }
        }
    }

    /// A whole number in `0..=max`. Accepts a numeric string too, as the
    /// protobuf JSON mapping writes 64-bit integers as strings.
    pub fn uint(&mut self, node: &Node, what: &str, max: u64) -> Option<u64> {
        let n = match &node.value {
            Value::Int(i) => *i,
            Value::String(s) => match s.trim().parse::<i128>() {
                Ok(i) => i,
                Err(_) => {
                    self.expected(node, what, "a whole number");
                    return None;
                }
            },
            _ => {
                self.expected(node, what, "a whole number");
                return None;
            }
        };
        match u64::try_from(n) {
            Ok(v) if v <= max => Some(v),
            _ => {
                self.error(
                    node.span,
                    format!("{what} must be between 0 and {max}, found {n}"),
                );
                None
            }
        }
    }

    /// A mapping of string keys to scalar values (stringified).
    pub fn string_map(
        &mut self,
        node: &Node,
        what: &str,
    ) -> Option<std::collections::BTreeMap<String, String>> {
        let entries = self.map(node, what)?;
        let mut out = std::collections::BTreeMap::new();
        let mut ok = true;
        for (key, value) in entries {
            match &value.value {
                Value::String(s) => {
                    out.insert(key.name.clone(), s.clone());
                }
                Value::Bool(_) | Value::Int(_) | Value::Float(_) => {
                    out.insert(key.name.clone(), value.value.to_string());
                }
                _ => {
                    self.expected(value, &format!("{what} `{}`", key.name), "a string");
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

/// Why `id` is not a valid id, if it is not.
pub fn id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        return Some("must not be empty");
    }
    if id.len() > 256 {
        return Some("is longer than 256 characters");
    }
    if id.chars().any(char::is_whitespace) {
        return Some("must not contain whitespace");
    }
    if id.split('.').any(str::is_empty) {
        return Some("has an empty segment (check the dots)");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Some("may only hold letters, digits, `-`, `_` and `.`");
    }
    None
}

fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
