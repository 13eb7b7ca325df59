//! A YAML (or JSON) document as a tree of [`Node`]s that remember where they
//! were written, so every later diagnostic can name `file:line:column`.
//!
//! Scalars are resolved with the YAML 1.2 core schema (`true`, `42`, `~` are
//! typed; anything quoted is a string). Duplicate mapping keys are rejected
//! here, because the usual loaders silently keep the last one. Anchors and
//! aliases are rejected too: a policy has no need for them and expanding
//! them invites exponential documents.

use std::fmt;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::diagnostic::{Diagnostic, Span};

/// Nesting deeper than this is refused; no honest policy comes near it.
const MAX_DEPTH: usize = 64;
/// Values (scalars and collections) one document may hold, unless its
/// reader allows more (a policy file, in proportion to its size limit).
/// The default policy holds about 500; a case file or a request, far
/// fewer than this.
pub const MAX_NODES: usize = 50_000;

/// A value with the place it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    String(String),
    Seq(Vec<Node>),
    /// Keys are strings; their order is kept for diagnostics.
    Map(Vec<(Key, Node)>),
}

/// A mapping key and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

impl Value {
    /// The kind of value, in words, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a number",
            Value::Float(_) => "a fractional number",
            Value::String(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::String(s) => f.write_str(s),
            Value::Seq(_) => f.write_str("[..]"),
            Value::Map(_) => f.write_str("{..}"),
        }
    }
}

/// Parses one YAML document. An empty document is `Null`.
pub fn parse(file: &str, text: &str) -> Result<Node, Vec<Diagnostic>> {
    let (node, diagnostics) = parse_lenient(file, text);
    match node {
        Some(node) if diagnostics.is_empty() => Ok(node),
        _ => Err(diagnostics),
    }
}

/// Parses one YAML document, keeping what can be kept: a duplicate key, an
/// anchor or an alias is reported and left out, and the rest of the tree is
/// still returned so later checks can report their problems too. A syntax
/// error gives no tree.
pub fn parse_lenient(file: &str, text: &str) -> (Option<Node>, Vec<Diagnostic>) {
    parse_lenient_within(file, text, MAX_NODES, "")
}

/// [`parse_lenient`] with at most `max_nodes` values; `raise` is added to
/// the error of a document with more (what would let it through).
pub fn parse_lenient_within(
    file: &str,
    text: &str,
    max_nodes: usize,
    raise: &str,
) -> (Option<Node>, Vec<Diagnostic>) {
    let mut builder = TreeBuilder::new(file, max_nodes, raise);
    let mut parser = Parser::new_from_str(text);
    loop {
        match parser.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((event, mark)) => {
                if let Err(d) = builder.on_event(event, mark) {
                    builder.diagnostics.push(d);
                    return (None, builder.diagnostics);
                }
            }
            Err(e) => {
                builder.diagnostics.push(Diagnostic::new(
                    file,
                    span_of(e.marker()),
                    format!("invalid YAML: {}", e.info()),
                ));
                return (None, builder.diagnostics);
            }
        }
    }
    builder.finish()
}

/// Converts a JSON value (which carries no positions) into a node tree whose
/// spans all point at the start of `file`.
pub fn from_json(value: serde_json::Value) -> Node {
    let span = Span::default();
    let value = match value {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i128::from(i)),
            None => match n.as_u64() {
                Some(u) => Value::Int(i128::from(u)),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
        },
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(items) => Value::Seq(items.into_iter().map(from_json).collect()),
        serde_json::Value::Object(map) => Value::Map(
            map.into_iter()
                .map(|(name, v)| (Key { name, span }, from_json(v)))
                .collect(),
        ),
    };
    Node { value, span }
}

fn span_of(mark: &Marker) -> Span {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Span {
        line: u32::try_from(mark.line()).unwrap_or(u32::MAX),
        column: u32::try_from(mark.col().saturating_add(1)).unwrap_or(u32::MAX),
    }
}

/// Containers being built, innermost last.
enum Frame {
    Seq(Span, Vec<Node>),
    /// The pending key is `None` while a key is awaited; `Some(None)` while
    /// the value of a dropped (duplicate) key is awaited. The index finds a
    /// duplicate key without a scan (mappings can hold thousands of keys).
    Map(
        Span,
        Vec<(Key, Node)>,
        Option<Option<Key>>,
        std::collections::HashMap<String, Span>,
    ),
}

struct TreeBuilder<'f> {
    file: &'f str,
    /// Values a document may hold, and what to say to raise it.
    max_nodes: usize,
    raise: &'f str,
    stack: Vec<Frame>,
    root: Option<Node>,
    documents: usize,
    /// Values seen so far (at most `max_nodes`).
    nodes: usize,
    /// Problems that do not stop the tree from being built.
    diagnostics: Vec<Diagnostic>,
}

impl<'f> TreeBuilder<'f> {
    fn new(file: &'f str, max_nodes: usize, raise: &'f str) -> Self {
        TreeBuilder {
            file,
            max_nodes,
            raise,
            stack: Vec::new(),
            root: None,
            documents: 0,
            nodes: 0,
            diagnostics: Vec::new(),
        }
    }

    fn error(&self, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.file, span, message)
    }

    fn on_event(&mut self, event: Event, mark: Marker) -> Result<(), Diagnostic> {
        let span = span_of(&mark);
        if matches!(
            event,
            Event::Scalar(..)
                | Event::SequenceStart(..)
                | Event::MappingStart(..)
                | Event::Alias(_)
        ) {
            self.nodes += 1;
            if self.nodes > self.max_nodes {
                return Err(self.error(
                    span,
                    format!(
                        "the document holds more than {} values; it is refused{}",
                        self.max_nodes, self.raise
                    ),
                ));
            }
        }
        match event {
            Event::StreamStart | Event::Nothing | Event::DocumentEnd => Ok(()),
            Event::StreamEnd => Ok(()),
            Event::DocumentStart => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(
                        self.error(span, "a file holds one YAML document; found a second `---`")
                    );
                }
                Ok(())
            }
            Event::Alias(_) => {
                let d = self.error(span, "YAML aliases (`*name`) are not supported");
                self.diagnostics.push(d);
                self.push_node(Node {
                    value: Value::Null,
                    span,
                })
            }
            Event::Scalar(text, style, anchor, _tag) => {
                self.refuse_anchor(anchor, span);
                let value = resolve_scalar(text, style);
                self.push_node(Node { value, span })
            }
            Event::SequenceStart(anchor, _) => {
                self.refuse_anchor(anchor, span);
                self.open(Frame::Seq(span, Vec::new()), span)
            }
            Event::MappingStart(anchor, _) => {
                self.refuse_anchor(anchor, span);
                self.open(
                    Frame::Map(span, Vec::new(), None, std::collections::HashMap::new()),
                    span,
                )
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(start, items)) => self.push_node(Node {
                    value: Value::Seq(items),
                    span: start,
                }),
                Some(Frame::Map(start, entries, _, _)) => self.push_node(Node {
                    value: Value::Map(entries),
                    span: start,
                }),
                None => Err(self.error(span, "invalid YAML: unbalanced end of a collection")),
            },
        }
    }

    fn refuse_anchor(&mut self, anchor: usize, span: Span) {
        if anchor != 0 {
            let d = self.error(span, "YAML anchors (`&name`) are not supported");
            self.diagnostics.push(d);
        }
    }

    fn open(&mut self, frame: Frame, span: Span) -> Result<(), Diagnostic> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.error(span, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        // A collection used as a mapping key is caught when it closes.
        self.stack.push(frame);
        Ok(())
    }

    fn push_node(&mut self, node: Node) -> Result<(), Diagnostic> {
        let file = self.file;
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq(_, items)) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map(_, entries, pending, index)) => match pending.take() {
                None => {
                    let name = match node.value {
                        Value::String(s) => s,
                        Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Null => {
                            return Err(Diagnostic::new(
                                file,
                                node.span,
                                format!("mapping key `{}` must be a string; quote it", node.value),
                            ));
                        }
                        Value::Seq(_) | Value::Map(_) => {
                            return Err(Diagnostic::new(
                                file,
                                node.span,
                                "a mapping key must be a string, not a collection",
                            ));
                        }
                    };
                    if let Some(first) = index.get(&name) {
                        self.diagnostics.push(Diagnostic::new(
                            file,
                            node.span,
                            format!(
                                "duplicate key `{name}` (first written at line {})",
                                first.line
                            ),
                        ));
                        // Keep the first; drop this key's value when it comes.
                        *pending = Some(None);
                        return Ok(());
                    }
                    index.insert(name.clone(), node.span);
                    *pending = Some(Some(Key {
                        name,
                        span: node.span,
                    }));
                    Ok(())
                }
                Some(Some(key)) => {
                    entries.push((key, node));
                    Ok(())
                }
                Some(None) => Ok(()),
            },
        }
    }

    fn finish(self) -> (Option<Node>, Vec<Diagnostic>) {
        let root = self.root.unwrap_or(Node {
            value: Value::Null,
            span: Span { line: 1, column: 1 },
        });
        (Some(root), self.diagnostics)
    }
}

/// YAML 1.2 core schema resolution of a scalar; quoted scalars are strings.
fn resolve_scalar(text: String, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(text);
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Some(i) = parse_int(&text) {
        return Value::Int(i);
    }
    if looks_like_float(&text) {
        if let Ok(x) = text.parse::<f64>() {
            return Value::Float(x);
        }
    }
    Value::String(text)
}

fn parse_int(text: &str) -> Option<i128> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let value = if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = digits.strip_prefix("0o") {
        i128::from_str_radix(oct, 8).ok()?
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse::<i128>().ok()?
    } else {
        return None;
    };
    Some(if negative { -value } else { value })
}

fn looks_like_float(text: &str) -> bool {
    let body = text.trim_start_matches(['-', '+']);
    matches!(body, ".inf" | ".Inf" | ".INF")
        || (body.bytes().any(|b| b.is_ascii_digit())
            && body
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Node {
        match parse("t.yaml", text) {
            Ok(n) => n,
            Err(d) => panic!("unexpected diagnostics: {d:?}"),
        }
    }

    fn parse_err(text: &str) -> String {
        match parse("t.yaml", text) {
            Ok(n) => panic!("expected an error, got {n:?}"),
            Err(d) => d
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    #[test]
    fn scalars_resolve_by_the_core_schema() {
        let node = parse_ok("a: true\nb: 42\nc: '42'\nd: ~\ne: no\nf: 1.5\ng: -0x10\n");
        let Value::Map(entries) = node.value else {
            panic!("not a map")
        };
        let values: Vec<_> = entries.into_iter().map(|(_, v)| v.value).collect();
        assert_eq!(
            values,
            vec![
                Value::Bool(true),
                Value::Int(42),
                Value::String("42".into()),
                Value::Null,
                Value::String("no".into()),
                Value::Float(1.5),
                Value::Int(-16),
            ]
        );
    }

    #[test]
    fn spans_are_one_based_line_and_column() {
        let node = parse_ok("top:\n  inner: value\n");
        let Value::Map(entries) = node.value else {
            panic!("not a map")
        };
        let (key, value) = &entries[0];
        assert_eq!(key.span, Span { line: 1, column: 1 });
        let Value::Map(inner) = &value.value else {
            panic!("not a map")
        };
        assert_eq!(inner[0].0.span, Span { line: 2, column: 3 });
        assert_eq!(
            inner[0].1.span,
            Span {
                line: 2,
                column: 10
            }
        );
    }

    #[test]
    fn duplicate_keys_are_rejected_with_both_places() {
        let err = parse_err("a: 1\nb: 2\na: 3\n");
        assert_eq!(
            err,
            "t.yaml:3:1: duplicate key `a` (first written at line 1)"
        );
    }

    #[test]
    fn aliases_and_anchors_are_rejected() {
        assert!(parse_err("a: &x 1\nb: *x\n").contains("anchors"));
    }

    #[test]
    fn malformed_yaml_names_the_place() {
        let err = parse_err("a: [1, 2\nb: 3\n");
        assert!(err.starts_with("t.yaml:"), "{err}");
        assert!(err.contains("invalid YAML"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let err = parse_err(&text);
        assert!(
            err.contains("nesting") || err.contains("recursion"),
            "{err}"
        );
    }

    #[test]
    fn a_second_document_is_refused() {
        assert!(parse_err("a: 1\n---\nb: 2\n").contains("one YAML document"));
    }

    #[test]
    fn non_string_keys_are_refused() {
        assert!(parse_err("1: a\n").contains("must be a string"));
    }
}
