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

mod choices;
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

/// Loads one or more files that together form one policy, within the
/// default [`PolicyLimits`].
pub fn load(sources: &[PolicySource<'_>]) -> Result<Policy, Diagnostics> {
    load_within(sources, &PolicyLimits::default())
}

/// Loads one or more files that together form one policy, within `limits`.
pub fn load_within(
    sources: &[PolicySource<'_>],
    limits: &PolicyLimits,
) -> Result<Policy, Diagnostics> {
    super::suggest::budgeted(|| load_within_budget(sources, limits))
}

/// Largest policy file, and largest policy (all files together), unless
/// the reader sets other [`PolicyLimits`]: generous, as a real
/// organisation's policy of 100,000 purposes is about 2 MB.
pub const DEFAULT_MAX_POLICY_FILE_BYTES: usize = 16 << 20;
pub const DEFAULT_MAX_POLICY_BYTES: usize = 16 << 20;
/// A policy file may hold one value (a scalar, a list, a mapping) for
/// every this many bytes of its size limit (and never fewer than
/// [`yaml::MAX_NODES`]): a purpose line (`  id: words`) is two values in
/// 20 to 60 bytes. While it is read a policy takes about 20 times its size
/// in memory (400,000 purposes, 11 MB: 220 MB).
pub const BYTES_PER_VALUE: usize = 8;

/// How large a policy may be: a larger one is refused with its size before
/// it is parsed, the error naming what raises the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyLimits {
    /// Largest policy file, in bytes.
    pub max_file_bytes: usize,
    /// Largest policy, all its files together, in bytes.
    pub max_bytes: usize,
    /// What raises `max_file_bytes` (a flag, `--max-policy-file-bytes`),
    /// named in its error; empty when nothing does.
    pub file_flag: &'static str,
    /// What raises `max_bytes`, named in its error; empty when nothing does.
    pub policy_flag: &'static str,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        PolicyLimits {
            max_file_bytes: DEFAULT_MAX_POLICY_FILE_BYTES,
            max_bytes: DEFAULT_MAX_POLICY_BYTES,
            file_flag: "",
            policy_flag: "",
        }
    }
}

impl PolicyLimits {
    /// Values one policy file may hold: in proportion to its size limit
    /// ([`BYTES_PER_VALUE`]).
    pub fn max_values(&self) -> usize {
        (self.max_file_bytes / BYTES_PER_VALUE).max(yaml::MAX_NODES)
    }

    /// The error of a policy file of `size` bytes, past `max_file_bytes`.
    pub fn file_too_large(&self, file: &str, size: u64) -> Diagnostic {
        Diagnostic::new(
            file,
            Span::default(),
            format!(
                "the file is {size} bytes; a policy file may be at most {} bytes ({}){}",
                self.max_file_bytes,
                in_words(self.max_file_bytes),
                raise(self.file_flag),
            ),
        )
    }

    /// The error of a policy whose files hold `total` bytes together, past
    /// `max_bytes`; named after its first file.
    pub fn policy_too_large(&self, file: &str, total: u64) -> Diagnostic {
        Diagnostic::new(
            file,
            Span::default(),
            format!(
                "the policy's files hold {total} bytes together; a policy may be at most {} bytes ({}){}",
                self.max_bytes,
                in_words(self.max_bytes),
                raise(self.policy_flag),
            ),
        )
    }

    /// The size errors of `sources`, if any is too large.
    fn too_large(&self, sources: &[PolicySource<'_>]) -> Vec<Diagnostic> {
        let mut out: Vec<Diagnostic> = sources
            .iter()
            .filter(|s| s.text.len() > self.max_file_bytes)
            .map(|s| self.file_too_large(s.name, s.text.len() as u64))
            .collect();
        let total: usize = sources.iter().map(|s| s.text.len()).sum();
        if out.is_empty() && total > self.max_bytes {
            out.push(
                self.policy_too_large(sources.first().map_or("<policy>", |s| s.name), total as u64),
            );
        }
        out
    }
}

/// `; raise --flag to load it`, or nothing without a flag.
fn raise(flag: &str) -> String {
    if flag.is_empty() {
        String::new()
    } else {
        format!("; raise {flag} to load it")
    }
}

/// A size limit in words: `16 MiB`, `128 KiB`, or bytes.
fn in_words(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

fn load_within_budget(
    sources: &[PolicySource<'_>],
    limits: &PolicyLimits,
) -> Result<Policy, Diagnostics> {
    let oversized = limits.too_large(sources);
    if !oversized.is_empty() {
        return Err(Diagnostics(oversized));
    }
    let mut diagnostics = Vec::new();
    let mut files = Vec::with_capacity(sources.len());
    let too_many = match limits.file_flag {
        "" => String::new(),
        flag => format!(
            " (a policy file may hold one value for every {BYTES_PER_VALUE} bytes of {flag}; raise it to load this one)"
        ),
    };
    for source in sources {
        let (root, problems) =
            yaml::parse_lenient_within(source.name, source.text, limits.max_values(), &too_many);
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
            crate::policy::Bindings {
                claims: r.claims,
                choices: r.choices,
            },
        )),
        None => Err(Diagnostics(vec![Diagnostic::new(
            sources.first().map_or("<policy>", |s| s.name),
            Span::default(),
            "the policy could not be loaded",
        )])),
    }
}
