//! The compare view: a candidate policy against the serving one, for a
//! privacy officer reviewing a change before it is merged. The matrix of
//! the candidate with every changed cell marked (before → after), the
//! requests that show each change (decided by both policies), and the
//! rules added, removed and changed. The candidate is only evaluated,
//! never served.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::view::esc;
use crate::engine::{CellChange, CellKind, Example, Matrix, PolicyDiff};

/// What the compare page shows under its form.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing asked yet.
    Empty,
    /// The candidate does not load: its diagnostics.
    Invalid(Vec<String>),
    Compared {
        diff: Box<PolicyDiff>,
        /// The candidate's own matrix, for the cells that did not change.
        candidate: Box<Matrix>,
    },
}

fn kind_label(kind: Option<CellKind>) -> &'static str {
    match kind {
        Some(CellKind::Permit) => "✓ permit",
        Some(CellKind::Deny) => "✗ deny",
        Some(CellKind::Conditional) => "◐ conditional",
        Some(CellKind::NotApplicable) => "– not applicable",
        None => "undeclared",
    }
}

fn kind_class(kind: Option<CellKind>) -> &'static str {
    kind.map_or("not-applicable", CellKind::as_str)
}

fn example(h: &mut String, label: &str, e: &Example) {
    let request = serde_json::to_string(&e.request).unwrap_or_default();
    let decided = |d: crate::engine::Decision, rules: &[std::sync::Arc<str>]| {
        if rules.is_empty() {
            d.to_string()
        } else {
            format!("{d} ({})", rules.join(", "))
        }
    };
    let _ = write!(
        h,
        r#"<li><strong>{label}</strong>: <code class="request">{}</code><br>before: <span class="decision">{}</span>, after: <span class="decision">{}</span></li>"#,
        esc(&request),
        esc(&decided(e.old, &e.old_rule_ids)),
        esc(&decided(e.new, &e.new_rule_ids)),
    );
}

/// The whole page: the serving policy's name, the form (with `candidate`
/// in it), and what the comparison found.
pub fn render(
    serving_name: &str,
    serving_revision: &str,
    candidate: &str,
    outcome: &Outcome,
) -> String {
    let mut h = String::with_capacity(32 * 1024);
    super::view::head(
        &mut h,
        "Compare a change · purposegate policy explorer",
        false,
    );
    let _ = write!(
        h,
        r##"<body>
<header>
<h1>Compare a policy change</h1>
<p class="policy">Serving policy <strong>{name}</strong>, revision <code>{revision}</code>. <a href="/">Back to the explorer</a></p>
</header>
<main>
<section id="candidate" aria-labelledby="candidate-title">
<h2 id="candidate-title">The candidate</h2>
<p>Paste the changed policy (YAML, one file). It is only evaluated against the serving policy, never served.</p>
<form method="post" action="/compare">
<label for="policy">Candidate policy</label>
<textarea id="policy" name="policy" rows="16" cols="80" spellcheck="false">{candidate}</textarea>
<p><button type="submit">Compare</button></p>
</form>
</section>
"##,
        name = esc(serving_name),
        revision = esc(serving_revision),
        candidate = esc(candidate),
    );
    match outcome {
        Outcome::Empty => {}
        Outcome::Invalid(diagnostics) => {
            h.push_str(r#"<div id="result" class="result invalid" role="alert" data-result="invalid"><p><strong>The candidate is not a valid policy</strong>:</p><ul>"#);
            for d in diagnostics {
                let _ = write!(h, "<li><code>{}</code></li>", esc(d));
            }
            h.push_str("</ul></div>\n");
        }
        Outcome::Compared { diff, candidate } => result(&mut h, diff, candidate),
    }
    h.push_str(
        r#"</main>
<footer><p>The same as JSON: <code>POST /api/diff</code> with the candidate as <code>application/yaml</code>; on the command line, <code>purposegate-server diff OLD NEW</code>.</p></footer>
</body>
</html>
"#,
    );
    h
}

fn result(h: &mut String, diff: &PolicyDiff, candidate: &Matrix) {
    let verdict = crate::diff_report::verdict(diff);
    let _ = write!(
        h,
        r#"<section id="result" class="result" role="status" data-result="{state}" data-widened="{widened}" data-narrowed="{narrowed}" data-untried="{untried}">
<h2>What the change does</h2>
<p class="verdict"><strong>{verdict}</strong>.</p>
<p>Candidate <strong>{name}</strong>, revision <code>{revision}</code>: {changed} of {compared} cells changed, {widened} widened, {narrowed} narrowed{untried_words}.</p>
"#,
        state = match (diff.widened > 0, diff.widens()) {
            (true, _) => "widens",
            (false, true) => "cannot-tell",
            (false, false) => "safe",
        },
        widened = diff.widened,
        narrowed = diff.narrowed,
        untried = diff.untried,
        untried_words = if diff.untried > 0 {
            format!(
                ", {} not tried: the diff cannot tell what the change does there",
                diff.untried
            )
        } else {
            String::new()
        },
        verdict = esc(&verdict),
        name = esc(&diff.new.name),
        revision = esc(&diff.new.revision),
        changed = diff.cells.iter().filter(|c| !c.cannot_tell()).count(),
        compared = diff.compared,
    );
    let changed: HashMap<(&str, &str), &CellChange> = diff
        .cells
        .iter()
        .map(|c| ((&*c.purpose, &*c.category), c))
        .collect();
    if candidate.cells.is_empty() {
        if let Some(why) = candidate.omitted.as_ref().or(diff.omitted.as_ref()) {
            let _ = write!(
                h,
                r#"<p class="omitted">The matrix is left out: {}.</p>"#,
                esc(why)
            );
        }
    } else {
        h.push_str(r#"<div class="scroll"><table class="matrix compare" id="matrix"><thead><tr><th scope="col">Purpose \ data category</th>"#);
        for c in &candidate.categories {
            let _ = write!(h, r#"<th scope="col">{}</th>"#, esc(c));
        }
        h.push_str("</tr></thead><tbody>");
        for (row, purpose) in candidate.purposes.iter().enumerate() {
            let _ = write!(h, r#"<tr><th scope="row">{}</th>"#, esc(purpose));
            for (column, category) in candidate.categories.iter().enumerate() {
                let kind = candidate
                    .cells
                    .get(row)
                    .and_then(|r| r.get(column))
                    .map(|cell| cell.kind);
                match changed.get(&(&**purpose, &**category)) {
                    Some(change) => {
                        let mark = match (change.widens(), change.newly_refused.is_some()) {
                            (true, _) => "widened",
                            (false, true) => "narrowed",
                            _ if change.cannot_tell() => "cannot-tell",
                            _ => "changed",
                        };
                        let _ = write!(
                            h,
                            r##"<td class="cell {class} {mark}" data-purpose="{p}" data-category="{c}" data-change="{mark}"><a href="#change-{row}-{column}">{before} → {after}</a></td>"##,
                            class = kind_class(change.new),
                            p = esc(purpose),
                            c = esc(category),
                            before = kind_label(change.old),
                            after = kind_label(change.new),
                        );
                    }
                    None => {
                        let _ = write!(
                            h,
                            r#"<td class="cell {class}" data-purpose="{p}" data-category="{c}">{label}</td>"#,
                            class = kind_class(kind),
                            p = esc(purpose),
                            c = esc(category),
                            label = kind_label(kind),
                        );
                    }
                }
            }
            h.push_str("</tr>");
        }
        h.push_str("</tbody></table></div>\n");
    }
    // Cells only the serving policy declares are not in the candidate's
    // matrix: they are listed with the others.
    if !diff.cells.is_empty() {
        h.push_str(r#"<h3>Changed cells</h3><ul class="changes" id="changes">"#);
        for change in &diff.cells {
            let place = candidate
                .purposes
                .iter()
                .position(|p| *p == change.purpose)
                .zip(
                    candidate
                        .categories
                        .iter()
                        .position(|c| *c == change.category),
                );
            let id = place.map_or(String::new(), |(r, c)| format!(r#" id="change-{r}-{c}""#));
            let _ = write!(
                h,
                r#"<li{id} data-purpose="{p}" data-category="{c}"><p><code>{p}</code> on <code>{c}</code>: {before} → {after}</p><ul>"#,
                p = esc(&change.purpose),
                c = esc(&change.category),
                before = kind_label(change.old),
                after = kind_label(change.new),
            );
            if let Some(e) = &change.newly_permitted {
                example(h, "newly permitted", e);
            }
            if let Some(e) = &change.newly_refused {
                example(h, "newly refused", e);
            }
            if let Some(untried) = &change.untried {
                let _ = write!(
                    h,
                    r#"<li class="cannot-tell"><strong>cannot tell</strong>: {}</li>"#,
                    esc(&untried.why)
                );
            }
            h.push_str("</ul></li>");
        }
        h.push_str("</ul>\n");
    }
    if !diff.rules.is_empty() {
        h.push_str(r#"<h3>Rules</h3><ul class="rule-changes">"#);
        for r in &diff.rules {
            let _ = write!(h, r#"<li><code>{}</code> {}"#, esc(&r.id), esc(r.change));
            if let Some(old) = &r.old {
                let _ = write!(h, "<br>before: {}", esc(old));
            }
            if let Some(new) = &r.new {
                let _ = write!(h, "<br>after: {}", esc(new));
            }
            h.push_str("</li>");
        }
        h.push_str("</ul>\n");
    }
    let others: Vec<String> = [
        ("Purposes", &diff.purposes),
        ("Data categories", &diff.categories),
    ]
    .iter()
    .filter(|(_, c)| !c.is_empty())
    .map(|(label, c)| {
        let mut parts: Vec<String> = c.added.iter().map(|i| format!("added {i}")).collect();
        parts.extend(c.removed.iter().map(|i| format!("removed {i}")));
        parts.extend(c.changed.iter().map(|i| format!("{i} described anew")));
        format!("{label}: {}", parts.join(", "))
    })
    .chain(diff.other.iter().cloned())
    .collect();
    if !others.is_empty() {
        h.push_str("<h3>Also changed</h3><ul>");
        for o in others {
            let _ = write!(h, "<li>{}</li>", esc(&o));
        }
        h.push_str("</ul>\n");
    }
    h.push_str("</section>\n");
}
