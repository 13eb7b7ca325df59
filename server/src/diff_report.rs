//! `diff`'s report in words: text for a terminal, Markdown for a pull
//! request's comment. (JSON is the `PolicyDiff` itself.)

use std::fmt::Write as _;

use crate::engine::{CellChange, CellKind, Changes, Example, PolicyDiff, plural};

fn kind(k: Option<CellKind>) -> &'static str {
    k.map_or("undeclared", CellKind::as_str)
}

fn what(cell: &CellChange) -> String {
    if let Some(untried) = &cell.untried {
        return format!("cannot tell: {}", untried.why);
    }
    match (cell.newly_permitted.is_some(), cell.newly_refused.is_some()) {
        (true, true) => "widens and narrows",
        (true, false) => "widens",
        (false, true) => "narrows",
        (false, false) => "no request decided otherwise",
    }
    .to_string()
}

fn request_json(e: &Example) -> String {
    serde_json::to_string(&e.request).unwrap_or_default()
}

fn decided(decision: crate::engine::Decision, rules: &[std::sync::Arc<str>]) -> String {
    if rules.is_empty() {
        decision.to_string()
    } else {
        format!("{decision} by {}", rules.join(", "))
    }
}

/// The verdict line: what a CI gate reads.
pub fn verdict(diff: &PolicyDiff) -> String {
    if diff.omitted.is_some() {
        return diff.cannot_tell.clone().unwrap_or_default();
    }
    if diff.widened > 0 {
        let widens = format!(
            "this change widens what data may be used for: {} newly permit{} requests",
            plural(diff.widened, "cell", "cells"),
            if diff.widened == 1 { "s" } else { "" }
        );
        return match &diff.cannot_tell {
            Some(untried) => format!("{widens}; and {untried}"),
            None => widens,
        };
    }
    if let Some(untried) = &diff.cannot_tell {
        return untried.clone();
    }
    "nothing is newly permitted".to_string()
}

fn flows_summary(diff: &PolicyDiff) -> String {
    let untried = if diff.untried > 0 {
        format!(", {} not tried (cannot tell)", diff.untried)
    } else {
        String::new()
    };
    let changed = diff.cells.iter().filter(|c| !c.cannot_tell()).count();
    format!(
        "{} of {} changed, {} widened (newly permitting requests), {} narrowed{untried}",
        plural(changed, "cell", "cells"),
        diff.compared,
        diff.widened,
        diff.narrowed
    )
}

fn changes_line(label: &str, c: &Changes) -> Option<String> {
    if c.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    parts.extend(c.added.iter().map(|id| format!("+ {id}")));
    parts.extend(c.removed.iter().map(|id| format!("- {id}")));
    parts.extend(c.changed.iter().map(|id| format!("~ {id} (description)")));
    Some(format!("{label}: {}", parts.join(", ")))
}

pub fn text(diff: &PolicyDiff) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "policy `{}` {} -> `{}` {}",
        diff.old.name, diff.old.revision, diff.new.name, diff.new.revision
    );
    match &diff.omitted {
        Some(why) => {
            let _ = writeln!(out, "data flows: not compared: {why}");
        }
        None => {
            let _ = writeln!(out, "data flows: {}", flows_summary(diff));
        }
    }
    for cell in &diff.cells {
        let _ = writeln!(
            out,
            "  {} x {}: {} -> {}, {}",
            cell.purpose,
            cell.category,
            kind(cell.old),
            kind(cell.new),
            what(cell)
        );
        for (label, example) in [
            ("newly permitted", &cell.newly_permitted),
            ("newly refused", &cell.newly_refused),
        ] {
            if let Some(e) = example {
                let _ = writeln!(out, "    {label}: {}", request_json(e));
                let _ = writeln!(
                    out,
                    "      old: {}; new: {}",
                    decided(e.old, &e.old_rule_ids),
                    decided(e.new, &e.new_rule_ids)
                );
            }
        }
    }
    if !diff.rules.is_empty() {
        let _ = writeln!(out, "rules:");
        for r in &diff.rules {
            let sign = match r.change {
                "added" => "+",
                "removed" => "-",
                _ => "~",
            };
            let _ = writeln!(out, "  {sign} {}", r.id);
            if let Some(old) = &r.old {
                let _ = writeln!(out, "      was: {old}");
            }
            if let Some(new) = &r.new {
                let _ = writeln!(out, "      now: {new}");
            }
        }
    }
    for line in [
        changes_line("purposes", &diff.purposes),
        changes_line("data categories", &diff.categories),
    ]
    .into_iter()
    .flatten()
    {
        let _ = writeln!(out, "{line}");
    }
    for other in &diff.other {
        let _ = writeln!(out, "{other}");
    }
    if diff.is_empty() {
        let _ = writeln!(out, "no change");
    }
    let _ = writeln!(out, "result: {}", verdict(diff));
    out
}

/// Markdown: a table of changed cells, the example requests, the rules.
pub fn markdown(diff: &PolicyDiff) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### purposegate: what this policy change does\n");
    let _ = writeln!(
        out,
        "`{}` `{}` → `{}` `{}`\n",
        diff.old.name, diff.old.revision, diff.new.name, diff.new.revision
    );
    let verdict = verdict(diff);
    let mut first = verdict.chars();
    let verdict: String = first
        .next()
        .map(|c| c.to_uppercase().chain(first).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{}**{verdict}.**\n",
        if diff.widens() { "⚠️ " } else { "" }
    );
    match &diff.omitted {
        Some(why) => {
            let _ = writeln!(out, "Data flows were not compared: {why}.\n");
        }
        None if diff.cells.is_empty() => {
            let _ = writeln!(
                out,
                "No purpose × data category cell changed ({} compared).\n",
                diff.compared
            );
        }
        None => {
            let _ = writeln!(out, "Data flows: {}.\n", flows_summary(diff));
            let _ = writeln!(
                out,
                "| Purpose | Data category | Before | After | Change |\n|---|---|---|---|---|"
            );
            for cell in &diff.cells {
                let _ = writeln!(
                    out,
                    "| `{}` | `{}` | {} | {} | {} |",
                    cell.purpose,
                    cell.category,
                    kind(cell.old),
                    kind(cell.new),
                    what(cell)
                );
            }
            let examples: Vec<&CellChange> = diff
                .cells
                .iter()
                .filter(|c| c.newly_permitted.is_some() || c.newly_refused.is_some())
                .collect();
            if !examples.is_empty() {
                let _ = writeln!(out, "\nExample requests, decided by both policies:\n");
                for cell in examples {
                    for (label, example) in [
                        ("newly permitted", &cell.newly_permitted),
                        ("newly refused", &cell.newly_refused),
                    ] {
                        if let Some(e) = example {
                            let _ = writeln!(
                                out,
                                "- `{}` × `{}`, {label}: `{}` — before: {}; after: {}",
                                cell.purpose,
                                cell.category,
                                request_json(e),
                                decided(e.old, &e.old_rule_ids),
                                decided(e.new, &e.new_rule_ids)
                            );
                        }
                    }
                }
            }
            let _ = writeln!(out);
        }
    }
    if !diff.rules.is_empty() {
        let _ = writeln!(out, "Rules:\n");
        for r in &diff.rules {
            let words = match (&r.old, &r.new) {
                (Some(old), Some(new)) => format!("was: {old}; now: {new}"),
                (None, Some(new)) => new.clone(),
                (Some(old), None) => old.clone(),
                (None, None) => String::new(),
            };
            let _ = writeln!(out, "- {} `{}`: {words}", r.change, r.id);
        }
        let _ = writeln!(out);
    }
    for line in [
        changes_line("Purposes", &diff.purposes),
        changes_line("Data categories", &diff.categories),
    ]
    .into_iter()
    .flatten()
    .chain(diff.other.iter().cloned())
    {
        let _ = writeln!(out, "- {line}");
    }
    out
}
