//! The policy's `choices` and `restriction` sections: decoded with the
//! file's shape, resolved with its names.

use std::sync::Arc;

use super::shape::FileDoc;
use crate::choices::{ChoiceRequirement, ChoiceScope, ChoicesPolicy};
use crate::decode::Decoder;
use crate::diagnostic::{Diagnostic, Span};
use crate::model::{NodeIdx, Taxonomy};
use crate::suggest;
use crate::yaml::Node;

/// A `choices` entry as written.
#[derive(Debug)]
pub(super) struct ChoiceDoc {
    purposes: Vec<(String, Span)>,
    by: ChoiceScope,
    opt_in: bool,
}

/// The `restriction` section as written.
#[derive(Debug)]
pub(super) struct RestrictionDoc {
    span: Span,
    allows: Vec<(String, Span)>,
}

pub(super) fn decode_choices(d: &mut Decoder<'_>, node: &Node) -> Vec<ChoiceDoc> {
    let Some(items) = d.seq(node, "`choices`") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let what = format!("choice #{}", i + 1);
        let Some(f) = d.fields(
            item,
            &what,
            &["description", "purposes", "by", "default", "basis"],
        ) else {
            continue;
        };
        if let Some(n) = f.get("description") {
            d.string(n, &format!("{what}: `description`"));
        }
        let purposes = match f.get("purposes") {
            Some(n) => d.id_list(n, &format!("{what}: `purposes`")),
            None => {
                d.error(item.span, format!("{what} needs `purposes`"));
                Vec::new()
            }
        };
        let by = match f.get("by") {
            None => {
                d.error(
                    item.span,
                    format!("{what} needs `by`: `tenant` or `data-subject`"),
                );
                continue;
            }
            Some(n) => match d.string(n, &format!("{what}: `by`")).as_deref() {
                Some("tenant") => ChoiceScope::Tenant,
                Some("data-subject") => ChoiceScope::DataSubject,
                Some(other) => {
                    d.error(
                        n.span,
                        format!(
                            "{what}: unknown `by` `{other}`; expected `tenant` or `data-subject`"
                        ),
                    );
                    continue;
                }
                None => continue,
            },
        };
        let (key, other, values): (&str, &str, [(&str, bool); 2]) = match by {
            ChoiceScope::Tenant => (
                "default",
                "basis",
                [("granted", false), ("withdrawn", true)],
            ),
            ChoiceScope::DataSubject => (
                "basis",
                "default",
                [("consent", true), ("legitimate-interest", false)],
            ),
        };
        if let Some(n) = f.get(other) {
            let whose = match by {
                ChoiceScope::Tenant => "a tenant's configuration has a `default`",
                ChoiceScope::DataSubject => "a data subject's choice has a `basis`",
            };
            d.error(n.span, format!("{what}: `{other}` does not apply; {whose}"));
        }
        let expected = format!("`{}` or `{}`", values[0].0, values[1].0);
        let opt_in = match f.get(key) {
            None => {
                d.error(item.span, format!("{what} needs `{key}`: {expected}"));
                continue;
            }
            Some(n) => {
                let given = d.string(n, &format!("{what}: `{key}`"));
                match values.iter().find(|(v, _)| Some(*v) == given.as_deref()) {
                    Some(&(_, opt_in)) => opt_in,
                    None => {
                        if let Some(g) = given {
                            d.error(
                                n.span,
                                format!("{what}: unknown `{key}` `{g}`; expected {expected}"),
                            );
                        }
                        continue;
                    }
                }
            }
        };
        out.push(ChoiceDoc {
            purposes,
            by,
            opt_in,
        });
    }
    out
}

pub(super) fn decode_restriction(d: &mut Decoder<'_>, node: &Node) -> Option<RestrictionDoc> {
    let f = d.fields(node, "`restriction`", &["description", "allows"])?;
    if let Some(n) = f.get("description") {
        d.string(n, "`restriction`: `description`");
    }
    let allows = match f.get("allows") {
        Some(n) => d.id_list(n, "`restriction`: `allows`"),
        None => {
            d.error(
                node.span,
                "`restriction` needs `allows`: the purposes a restricted data subject's data may still serve (`[]` for none)",
            );
            return None;
        }
    };
    Some(RestrictionDoc {
        span: node.span,
        allows,
    })
}

/// Every file's `choices` and the one `restriction`, names resolved.
pub(super) fn resolve_choices(
    files: &[FileDoc],
    purposes: &Taxonomy,
    out: &mut Vec<Diagnostic>,
) -> ChoicesPolicy {
    let mut policy = ChoicesPolicy::default();
    let lookup = |file: &str, ids: &[(String, Span)], what: &str, out: &mut Vec<Diagnostic>| {
        let mut found: Vec<NodeIdx> = Vec::new();
        for (p, span) in ids {
            match purposes.lookup(p) {
                Some(idx) => found.push(idx),
                None => out.push(Diagnostic::new(
                    file,
                    *span,
                    format!(
                        "{what}: unknown purpose `{p}`{}",
                        suggest::did_you_mean(p, purposes.ids())
                    ),
                )),
            }
        }
        found
    };
    let mut restriction_at: Option<(&str, Span)> = None;
    for f in files {
        for (i, doc) in f.choices.iter().enumerate() {
            let what = format!("choice #{}", i + 1);
            let purpose_idx = lookup(&f.file, &doc.purposes, &what, out);
            policy.requirements.push(ChoiceRequirement {
                purposes: doc
                    .purposes
                    .iter()
                    .map(|(p, _)| Arc::from(p.as_str()))
                    .collect(),
                purpose_idx,
                by: doc.by,
                opt_in: doc.opt_in,
            });
        }
        if let Some(r) = &f.restriction {
            if let Some((first, at)) = restriction_at {
                out.push(Diagnostic::new(
                    &f.file,
                    r.span,
                    format!(
                        "a second `restriction` (the first is at {first}:{}:{}); a policy has one",
                        at.line, at.column
                    ),
                ));
                continue;
            }
            restriction_at = Some((&f.file, r.span));
            policy.restriction = true;
            policy.restriction_idx = lookup(&f.file, &r.allows, "`restriction`", out);
            policy.restriction_allows = r
                .allows
                .iter()
                .map(|(p, _)| Arc::from(p.as_str()))
                .collect();
        }
    }
    policy
}
