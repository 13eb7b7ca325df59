//! The second pass: names resolved across every file (parents, unknown
//! purposes and categories, duplicate ids, settings, claims).

use std::collections::HashMap;
use std::sync::Arc;

use super::condition::{Bound, ConditionDoc};
use super::shape::{Declaration, FileDoc, RuleDoc, SETTING_KEYS};
use crate::diagnostic::{Diagnostic, Span};
use crate::model::{Claim, Condition, NodeIdx, Rule, Settings, Taxonomy, parent_id};
use crate::suggest;

/// Everything needed to build the policy, names resolved.
pub(super) struct Resolved {
    pub(super) name: String,
    pub(super) description: String,
    pub(super) settings: Settings,
    pub(super) purposes: Taxonomy,
    pub(super) categories: Taxonomy,
    pub(super) rules: Vec<Rule>,
    pub(super) claims: Option<Vec<Claim>>,
    pub(super) choices: crate::choices::ChoicesPolicy,
}

/// Claims of every file that has a `claims` section, names resolved.
pub(super) fn resolve_claims(
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

pub(super) fn resolve(files: &[FileDoc], out: &mut Vec<Diagnostic>) -> Option<Resolved> {
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
    let choices = super::choices::resolve_choices(files, &purposes, out);
    let (name, _, _) = name?;
    Some(Resolved {
        name: name.to_string(),
        description,
        settings,
        purposes,
        categories,
        rules,
        claims,
        choices,
    })
}

/// Where each id was first written, so a later one is reported as a
/// duplicate that names the first.
#[derive(Debug, Default)]
pub(super) struct FirstSeen<'a>(HashMap<&'a str, (&'a str, Span)>);

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
pub(super) fn taxonomy(
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

pub(super) struct Resolver<'a, 'o> {
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
