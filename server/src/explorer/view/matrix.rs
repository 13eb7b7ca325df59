//! The page's matrix: a cell per purpose and data category, each
//! explaining itself (its rules, its conditions, an example request of
//! each way it can go) in a section reached through its `:target` link.

use std::fmt::Write as _;

use super::{Page, esc, prose};
use crate::engine::{Cell, CellKind, Policy};

fn symbol(kind: CellKind) -> &'static str {
    match kind {
        CellKind::Permit => "✓",
        CellKind::Deny => "✗",
        CellKind::Conditional => "◐",
        CellKind::NotApplicable => "–",
    }
}

fn label(kind: CellKind) -> &'static str {
    match kind {
        CellKind::Permit => "permit",
        CellKind::Deny => "deny",
        CellKind::Conditional => "conditional",
        CellKind::NotApplicable => "not applicable",
    }
}

/// By position: ids may hold any of the characters a separator could.
fn anchor(row: usize, column: usize) -> String {
    format!("cell-{row}-{column}")
}

impl Page<'_> {
    pub(super) fn matrix_section(&self, h: &mut String) {
        h.push_str(
            r#"<section id="matrix" aria-labelledby="matrix-title">
<h2 id="matrix-title">What each purpose may do with each data category</h2>
<p>Each cell is the engine's own answer, from evaluating every combination of the facts its rules read. Choose a cell for its rules and conditions.</p>
<ul class="legend" aria-label="Legend">
<li><span class="cell permit">✓ permit</span> always permitted</li>
<li><span class="cell conditional">◐ conditional</span> permitted only when the request shows its conditions hold; one that does not is blocked (choose the cell for an example of each)</li>
<li><span class="cell deny">✗ deny</span> never permitted: a rule prohibits it, and where the prohibition has an exception (such as the customer's instruction), the exception only lifts it: no rule permits it then either</li>
<li><span class="cell not-applicable">– not applicable</span> no rule speaks: not permitted</li>
<li><span class="choice-mark">⚑</span> depends on choices: permitted only where the tenant's configuration or the data subject's consent allows it, read at every decision</li>
</ul>
<div class="scroll"><table class="matrix">
<caption>Purposes (rows) × data categories (columns); point at one for its description</caption>
<thead><tr><th scope="col">Purpose</th>"#,
        );
        let described = |tree, id: &str| esc(&description(tree, id));
        for category in &self.matrix.categories {
            let _ = write!(
                h,
                r#"<th scope="col" title="{}"><span>{}</span></th>"#,
                described(self.policy.categories(), category),
                esc(category)
            );
        }
        h.push_str("</tr></thead>\n<tbody>\n");
        for (r, (purpose, row)) in self
            .matrix
            .purposes
            .iter()
            .zip(&self.matrix.cells)
            .enumerate()
        {
            let depth = purpose.matches('.').count();
            let _ = write!(
                h,
                r#"<tr><th scope="row" class="depth-{}" title="{}">{}</th>"#,
                depth.min(4),
                described(self.policy.purposes(), purpose),
                esc(purpose)
            );
            for (c, cell) in row.iter().enumerate() {
                let mut tip = match cell.kind {
                    CellKind::Conditional => conditions(self.policy, cell).join("; "),
                    _ => cell.reason.clone(),
                };
                // Only a cell the rules permit can be narrowed by choices.
                let choices = cell
                    .choices
                    .as_ref()
                    .filter(|_| matches!(cell.kind, CellKind::Permit | CellKind::Conditional));
                if let Some(by) = choices {
                    tip = format!("depends on {by}; {tip}");
                }
                let _ = write!(
                    h,
                    r##"<td class="cell {kind}" data-purpose="{p}" data-category="{c}" data-kind="{kind}"{dep}><a href="#{anchor}" title="{tip}" aria-label="{p} on {c}: {label}{dep_label}">{symbol} {label}{mark}</a></td>"##,
                    kind = cell.kind.as_str(),
                    p = esc(&cell.purpose),
                    c = esc(&cell.category),
                    anchor = anchor(r, c),
                    tip = esc(&tip.replace('`', "")),
                    symbol = symbol(cell.kind),
                    label = label(cell.kind),
                    dep = if choices.is_some() {
                        r#" data-choices="yes""#
                    } else {
                        ""
                    },
                    dep_label = if choices.is_some() {
                        ", depends on choices"
                    } else {
                        ""
                    },
                    mark = if choices.is_some() {
                        r#" <span class="choice-mark">⚑</span>"#
                    } else {
                        ""
                    },
                );
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody></table></div>\n");
        if let Some(why) = &self.matrix.omitted {
            let _ = writeln!(
                h,
                r#"<p class="omitted">The matrix is left out: {}. Decisions are served as usual; try a request below.</p>"#,
                esc(why)
            );
        }
        if self.matrix.budget_spent {
            let _ = writeln!(
                h,
                r#"<p class="omitted">The matrix stopped trying combinations after {} evaluations: the later cells were tried fact by fact, and a permit needing two facts at once may be missed there.</p>"#,
                self.matrix.evaluated
            );
        }
        h.push_str("<div class=\"explanations\">\n");
        for (r, row) in self.matrix.cells.iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                explanation(h, self.policy, cell, &anchor(r, c));
            }
        }
        h.push_str("</div>\n</section>\n");
    }
}

/// What a conditional cell depends on: each of its rules' conditions.
fn conditions(policy: &Policy, cell: &Cell) -> Vec<String> {
    cell.rules
        .iter()
        .filter_map(|&i| policy.rules().get(i))
        .map(crate::engine::when_in_words)
        .collect()
}

fn explanation(h: &mut String, policy: &Policy, cell: &Cell, anchor: &str) {
    let _ = write!(
        h,
        r#"<section class="explanation" id="{anchor}" tabindex="-1" aria-label="{p} on {c}">
<h3><code>{p}</code> on <code>{c}</code>: <span class="cell {kind}">{symbol} {label}</span></h3>
<p>A request naming only this purpose and category gets <strong>{decision}</strong>: {reason}</p>
"#,
        anchor = anchor,
        p = esc(&cell.purpose),
        c = esc(&cell.category),
        kind = cell.kind.as_str(),
        symbol = symbol(cell.kind),
        label = label(cell.kind),
        decision = cell.decision.as_str(),
        reason = prose(&cell.reason),
    );
    if let Some(by) = cell
        .choices
        .as_ref()
        .filter(|_| matches!(cell.kind, CellKind::Permit | CellKind::Conditional))
    {
        let _ = write!(
            h,
            "<p class=\"choices\">⚑ Depends on {}: where the rules permit, each decision also reads those choices (of the request's owner tenant and data subject) and is denied where they do not allow it; a request that names neither is <strong>INDETERMINATE</strong>.</p>",
            esc(by)
        );
    }
    let _ = write!(
        h,
        "<p class=\"terms\"><code>{p}</code>: {pd}<br><code>{c}</code>: {cd}</p>",
        p = esc(&cell.purpose),
        pd = esc(&description(policy.purposes(), &cell.purpose)),
        c = esc(&cell.category),
        cd = esc(&description(policy.categories(), &cell.category)),
    );
    if cell.kind == CellKind::Conditional {
        h.push_str("<p>It depends on the facts:</p><ul>");
        for condition in conditions(policy, cell) {
            let _ = write!(h, "<li>{}</li>", prose(&condition));
        }
        h.push_str("</ul><p>For example:</p><ul>");
        for example in [&cell.permitted_example, &cell.refused_example]
            .into_iter()
            .flatten()
        {
            example_item(h, policy, example);
        }
        h.push_str("</ul>");
    }
    if let Some(lifted) = &cell.lifted_example {
        h.push_str(
            "<p>A prohibition here has an exception. When it holds, the prohibition is lifted, but no rule permits the processing either, so it is still blocked:</p><ul>",
        );
        example_item(h, policy, lifted);
        h.push_str("</ul>");
    }
    if cell.rules.is_empty() {
        h.push_str("<p>No rule speaks on this cell.</p>");
    } else {
        h.push_str("<p>Rules that speak here:</p><ul>");
        for rule in cell.rules.iter().filter_map(|&i| policy.rules().get(i)) {
            let _ = write!(
                h,
                r##"<li><a href="#rule-{id}"><code>{id}</code></a>: {text}</li>"##,
                id = esc(&rule.id),
                text = prose(&rule.describe())
            );
        }
        h.push_str("</ul>");
    }
    let _ = writeln!(
        h,
        r##"<p class="evaluated">{} {} evaluated{}. <a href="#matrix">Back to the matrix</a></p></section>"##,
        cell.evaluated,
        if cell.evaluated == 1 {
            "fact combination"
        } else {
            "fact combinations"
        },
        if cell.exhaustive {
            ""
        } else {
            " (too many to try together: each fact was varied on its own, so a permit needing two facts at once may be missed)"
        }
    );
}

/// The description of a purpose or data category, as the policy gives it.
fn description(tree: &crate::engine::Taxonomy, id: &str) -> String {
    tree.lookup(id)
        .and_then(|i| tree.node(i))
        .map(|n| n.description.clone())
        .unwrap_or_default()
}

/// One example request of a cell, as the JSON `/api/check` and the form
/// take, with what `Check` answers for it.
fn example_item(h: &mut String, policy: &Policy, request: &crate::engine::DecisionRequest) {
    let answer = policy.evaluate(request);
    let json = serde_json::to_string(request).unwrap_or_default();
    let _ = write!(
        h,
        "<li><strong>{decision}</strong> for <code class=\"request\">{json}</code>: {reason}</li>",
        decision = answer.decision.as_str(),
        json = esc(&json),
        reason = prose(&answer.reason.to_string()),
    );
}
