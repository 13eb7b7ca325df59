//! Load errors that name the file, line and column they are about.
//!
//! Loading never stops at the first problem: it collects every
//! [`Diagnostic`] of every file and returns them together as [`Diagnostics`].

use std::fmt;
use std::sync::Arc;

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span {
    pub line: u32,
    pub column: u32,
}

impl Default for Span {
    fn default() -> Self {
        Span { line: 1, column: 1 }
    }
}

/// One problem found while loading a policy or a case file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: Arc<str>,
    pub span: Span,
    pub message: String,
}

impl Diagnostic {
    pub fn new(file: &str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            file: Arc::from(file),
            span,
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.span.line, self.span.column, self.message
        )
    }
}

/// Every problem found in one load, in file and position order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Most problems shown at once; a last line says how many more there are
/// (a generated file can hold thousands, and a reload error is kept and
/// served by `GetPolicy`).
pub const MAX_SHOWN: usize = 1000;

/// A count with its noun: `1 rule`, `2 rules`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().take(MAX_SHOWN).enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > MAX_SHOWN {
            let more = plural(self.0.len() - MAX_SHOWN, "more problem", "more problems");
            write!(f, "\n... and {more}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Collects diagnostics for one file.
#[derive(Debug)]
pub struct Sink<'f> {
    pub file: &'f str,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'f> Sink<'f> {
    pub fn new(file: &'f str) -> Self {
        Sink {
            file,
            diagnostics: Vec::new(),
        }
    }

    pub fn error(&mut self, span: Span, message: impl Into<String>) {
        self.diagnostics
            .push(Diagnostic::new(self.file, span, message));
    }
}
