//! The purpose policy engine: the model, strict loading, the compiled index
//! and evaluation of docs/semantics.md.
//!
//! **Architecture Invariant:** this crate does no I/O and knows nothing of
//! tonic, prost or tokio: its manifest holds no such dependency. It takes
//! text and returns values; the server, the sidecar, the CLI and the
//! benchmarks all call it.
//!
//! **Architecture Invariant:** a decision is a value, never an error:
//! [`Policy::evaluate`] always returns an [`Evaluation`].

mod cases;
mod choices;
mod decision;
mod decode;
mod diagnostic;
mod diff;
mod eval;
mod facts;
mod glob;
pub mod json;
mod load;
mod matrix;
mod model;
mod policy;
mod purposes;
mod questions;
mod reason;
mod request;
mod suggest;
mod yaml;

pub mod default_policy;

pub use cases::{Case, CaseFile, CaseResult};
pub use choices::{
    CHOICE_TTL_SECONDS, Choice, ChoiceFacts, ChoiceRequirement, ChoiceScope, ChoiceState,
    ChoicesPolicy, Judged, civil_date, rfc3339,
};
pub use decision::{Decision, Evaluation, MonitorEvaluation};
pub use decode::{Decoder, Fields};
pub use diagnostic::{Diagnostic, Diagnostics, MAX_SHOWN, Span, plural};
pub use diff::{CellChange, Changes, Example, PolicyDiff, RuleChange, Side};
pub use facts::Fact;
pub use glob::{glob, glob_slice};
pub use load::{
    BYTES_PER_VALUE, DEFAULT_MAX_POLICY_BYTES, DEFAULT_MAX_POLICY_FILE_BYTES, POLICY_VERSION,
    PolicyLimits, PolicySource,
};
pub use matrix::{Cell, CellKind, MAX_CELLS, MAX_EVALUATIONS, Matrix, when_in_words};
pub use model::{
    Claim, Condition, Deidentification, Effect, IdHasher, Mode, NodeIdx, Obligation, Presence,
    Rule, Settings, StateTest, Taxonomy, TaxonomyNode, purpose_within,
};
pub use policy::{Policy, RuleIdx};
pub use purposes::{PermittedPurpose, PermittedPurposes};
pub use questions::{FactValues, MAX_CELL_QUESTIONS, Untried};
pub use reason::Reason;
pub use request::{
    Context, DecisionRequest, InvalidRequest, MAX_ID_BYTES, MAX_LIST_ENTRIES, MAX_ORIGINS,
    MAX_SUBJECT_ID_BYTES, MAX_TEXT_BYTES, Resource, Subject,
};
pub use suggest::did_you_mean;
pub use yaml::{Key, Node, Value};

impl Policy {
    /// Loads one or more files that together form one policy, within the
    /// default [`PolicyLimits`].
    pub fn load(sources: &[PolicySource<'_>]) -> Result<Policy, Diagnostics> {
        load::load(sources)
    }

    /// Loads one or more files that together form one policy, within
    /// `limits`.
    pub fn load_within(
        sources: &[PolicySource<'_>],
        limits: &PolicyLimits,
    ) -> Result<Policy, Diagnostics> {
        load::load_within(sources, limits)
    }

    /// Loads a policy from one file's text.
    pub fn parse(file: &str, text: &str) -> Result<Policy, Diagnostics> {
        load::load(&[PolicySource { name: file, text }])
    }
}

/// Reads a request written as YAML or JSON (the protobuf JSON form of
/// `CheckRequest`), reporting every problem.
pub fn parse_request(file: &str, text: &str) -> Result<DecisionRequest, Diagnostics> {
    let node = yaml::parse(file, text).map_err(Diagnostics)?;
    request_from_node(file, &node)
}

/// Reads a request from parsed JSON.
pub fn request_from_json(
    file: &str,
    value: serde_json::Value,
) -> Result<DecisionRequest, Diagnostics> {
    request_from_node(file, &yaml::from_json(value))
}

/// Reads a request from JSON text, refusing duplicate keys
/// ([`json::parse_strict`]).
pub fn request_from_json_text(file: &str, text: &[u8]) -> Result<DecisionRequest, Diagnostics> {
    match json::parse_strict(text) {
        Ok(value) => request_from_json(file, value).map_err(|problems| {
            // JSON is YAML: read as YAML, the same text gives the same
            // problems with their real lines and columns (read as JSON,
            // every value sits at 1:1). Used only when both readings agree.
            let placed = std::str::from_utf8(text)
                .ok()
                .and_then(|text| parse_request(file, text).err())
                .filter(|placed| {
                    placed.0.len() == problems.0.len()
                        && placed
                            .0
                            .iter()
                            .zip(&problems.0)
                            .all(|(a, b)| a.message == b.message)
                });
            placed.unwrap_or(problems)
        }),
        Err(e) => Err(Diagnostics(vec![Diagnostic::new(
            file,
            Span {
                line: u32::try_from(e.line()).unwrap_or(u32::MAX).max(1),
                column: u32::try_from(e.column()).unwrap_or(u32::MAX).max(1),
            },
            format!("invalid JSON (the text is not JSON): {e}"),
        )])),
    }
}

fn request_from_node(file: &str, node: &yaml::Node) -> Result<DecisionRequest, Diagnostics> {
    let mut d = decode::Decoder::new(file);
    match request::decode_request(&mut d, node) {
        Some(req) if d.sink.diagnostics.is_empty() => Ok(req),
        _ => Err(Diagnostics(d.sink.diagnostics)),
    }
}
