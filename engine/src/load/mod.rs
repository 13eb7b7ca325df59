//! Strict loading of policy files (version 1) into a [`Policy`].
//!
//! Loading runs in two passes over every file: decode each file's shape
//! (unknown keys, wrong types, bad ids), then resolve names across all files
//! (parents, unknown purposes and categories, duplicate ids, settings). Every
//! problem of every pass is collected; nothing is built unless there are
//! none.

use std::collections::HashMap;

use super::decode::Decoder;
use super::diagnostic::{Diagnostic, Diagnostics, Span};
use super::policy::Policy;
use super::yaml;

mod condition;
mod names;
mod shape;

pub use super::model::POLICY_VERSION;

/// One policy file's name (for diagnostics) and text.
#[derive(Debug, Clone, Copy)]
pub struct PolicySource<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

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
            let file = shape::decode_file(&mut decoder, &root);
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
    let resolved = names::resolve(&files, &mut diagnostics);
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
