//! The explorer page as HTML, rendered on the server from the policy and
//! its matrix, so it reads without JavaScript: the cells explain themselves
//! through `:target` links and the try form is a plain GET form.

use std::fmt::Write as _;

use crate::engine::{Cell, CellKind, Evaluation, Matrix, PermittedPurposes, Policy, Taxonomy};

/// Text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The document's start up to `</head>`: `title` (escaped here), the
/// stylesheet and, with `script`, the script that follows reloads.
pub fn head(h: &mut String, title: &str, script: bool) {
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{}</title>
<link rel="stylesheet" href="/explorer.css">
{}</head>
"#,
        esc(title),
        if script {
            "<script src=\"/explorer.js\" defer></script>\n"
        } else {
            ""
        }
    );
}

/// Backquoted ids in the engine's sentences become `<code>`.
fn prose(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in esc(text).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

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

/// What the try form was given, echoed back into it.
#[derive(Debug, Default, Clone)]
pub struct Form {
    pub fields: Vec<(String, String)>,
}

impl Form {
    pub fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The outcome of the try form.
#[derive(Debug)]
pub enum Tried {
    Answer(Box<Evaluation>),
    /// The purpose was left empty: the purposes the data may serve.
    Purposes(Box<PermittedPurposes>),
    Invalid(String),
}

pub struct Page<'a> {
    pub policy: &'a Policy,
    pub matrix: &'a Matrix,
    /// What `/api/policy` calls this revision and reload error, for the
    /// script to notice a change from the page it was served with.
    pub etag: &'a str,
    pub last_reload_error: &'a str,
    pub form: &'a Form,
    pub tried: Option<&'a Tried>,
}

impl std::fmt::Debug for Page<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("policy", &self.policy.name())
            .finish_non_exhaustive()
    }
}

impl Page<'_> {
    pub fn render(&self) -> String {
        let p = self.policy;
        let mut h = String::with_capacity(64 * 1024);
        head(
            &mut h,
            &format!("{} · purposegate policy explorer", p.name()),
            true,
        );
        let _ = write!(
            h,
            r##"<body data-revision="{revision}" data-etag="{etag}">
<a class="skip" href="#matrix">Skip to the matrix</a>
<header>
<h1>Policy explorer</h1>
<p class="policy">Policy <strong id="policy-name">{name}</strong>, revision <code id="policy-revision">{revision}</code><span id="live" aria-live="polite"></span></p>
"##,
            name = esc(p.name()),
            revision = esc(p.revision()),
            etag = esc(self.etag),
        );
        if !p.description().is_empty() {
            let _ = writeln!(h, "<p>{}</p>", prose(p.description()));
        }
        if !self.last_reload_error.is_empty() {
            let _ = writeln!(
                h,
                r#"<div class="reload-error" role="alert" id="reload-error"><strong>The last reload failed</strong>; the revision above is still served.<pre>{}</pre></div>"#,
                esc(self.last_reload_error)
            );
        }
        h.push_str(
            r##"<nav aria-label="Sections"><ul><li><a href="#matrix">Matrix</a></li><li><a href="#try">Try a request</a></li><li><a href="#rules">Rules</a></li><li><a href="#purposes">Purposes</a></li><li><a href="#categories">Data categories</a></li><li><a href="/compare">Compare a change</a></li></ul></nav>
</header>
<main>
"##,
        );
        self.matrix_section(&mut h);
        self.try_section(&mut h);
        self.rules_section(&mut h);
        tree_section(&mut h, "purposes", "Purposes", p.purposes());
        tree_section(&mut h, "categories", "Data categories", p.categories());
        h.push_str(
            r#"</main>
<footer><p>Served by purposegate-server. The same data as JSON: <a href="/api/policy"><code>/api/policy</code></a>; decisions: <code>POST /api/check</code>; the purposes a request may serve: <code>POST /api/permitted-purposes</code>.</p></footer>
</body>
</html>
"#,
        );
        h
    }

    fn matrix_section(&self, h: &mut String) {
        h.push_str(
            r#"<section id="matrix" aria-labelledby="matrix-title">
<h2 id="matrix-title">What each purpose may do with each data category</h2>
<p>Each cell is the engine's own answer, from evaluating every combination of the facts its rules read. Choose a cell for its rules and conditions.</p>
<ul class="legend" aria-label="Legend">
<li><span class="cell permit">✓ permit</span> always permitted</li>
<li><span class="cell conditional">◐ conditional</span> permitted only when the request shows its conditions hold; one that does not is blocked (choose the cell for an example of each)</li>
<li><span class="cell deny">✗ deny</span> never permitted: a rule prohibits it, and where the prohibition has an exception (such as the customer's instruction), the exception only lifts it: no rule permits it then either</li>
<li><span class="cell not-applicable">– not applicable</span> no rule speaks: not permitted</li>
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
                let tip = match cell.kind {
                    CellKind::Conditional => conditions(self.policy, cell).join("; "),
                    _ => cell.reason.clone(),
                };
                let _ = write!(
                    h,
                    r##"<td class="cell {kind}" data-purpose="{p}" data-category="{c}" data-kind="{kind}"><a href="#{anchor}" title="{tip}" aria-label="{p} on {c}: {label}">{symbol} {label}</a></td>"##,
                    kind = cell.kind.as_str(),
                    p = esc(&cell.purpose),
                    c = esc(&cell.category),
                    anchor = anchor(r, c),
                    tip = esc(&tip.replace('`', "")),
                    symbol = symbol(cell.kind),
                    label = label(cell.kind),
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

    fn try_section(&self, h: &mut String) {
        let p = self.policy;
        let form = self.form;
        h.push_str(
            r#"<section id="try" aria-labelledby="try-title">
<h2 id="try-title">Try a request</h2>
<p>The answer is the one <code>Check</code> gives for the same request. Leave the purpose at <em>any</em> to ask the reverse question: for which purposes may this data be used (<code>PermittedPurposes</code>)?</p>
<form method="get" action="/#result" id="try-form">
<div class="fields">
"#,
        );
        select(
            h,
            "purpose",
            "Purpose",
            p.purposes(),
            form.get("purpose"),
            Some("any: which purposes may this data serve?"),
        );
        select(
            h,
            "category",
            "Data category",
            p.categories(),
            form.get("category"),
            None,
        );
        text_input(h, "subject", "Subject id", form.get("subject"), "e.g. crm");
        text_input(
            h,
            "tenant",
            "Subject's tenant",
            form.get("tenant"),
            "the customer it acts for",
        );
        text_input(
            h,
            "owner_tenant",
            "Data owner's tenant",
            form.get("owner_tenant"),
            "the customer who owns the data",
        );
        let _ = write!(
            h,
            r#"<label for="deidentification">De-identification</label><select id="deidentification" name="deidentification"><option value="">not given</option>"#
        );
        for state in crate::engine::Deidentification::ALL {
            let selected = if form.get("deidentification") == state.as_str() {
                " selected"
            } else {
                ""
            };
            let _ = write!(
                h,
                r#"<option value="{v}"{selected}>{v}</option>"#,
                v = state.as_str()
            );
        }
        h.push_str("</select>\n");
        let _ = writeln!(
            h,
            r#"<label for="group_size">Group size (k)</label><input id="group_size" name="group_size" type="number" min="0" value="{}" placeholder="not given">"#,
            esc(form.get("group_size"))
        );
        text_input(
            h,
            "origin",
            "Derived from (categories, comma-separated)",
            form.get("origin"),
            "e.g. customer-data",
        );
        text_input(
            h,
            "instruction",
            "Customer's documented instruction",
            form.get("instruction"),
            "empty: none",
        );
        text_input(
            h,
            "obligations",
            "Obligations the caller fulfils (comma-separated)",
            form.get("obligations"),
            "",
        );
        h.push_str(
            r#"</div>
<button type="submit">Decide</button>
</form>
"#,
        );
        match self.tried {
            None => {}
            Some(Tried::Invalid(problem)) => {
                let _ = writeln!(
                    h,
                    r#"<div id="result" class="result invalid" role="status" data-decision="INVALID_ARGUMENT"><p><strong>Invalid request</strong>: {}</p></div>"#,
                    esc(problem)
                );
            }
            Some(Tried::Answer(e)) => {
                let kind = match e.decision {
                    crate::engine::Decision::Permit => "permit",
                    crate::engine::Decision::Deny => "deny",
                    crate::engine::Decision::NotApplicable => "not-applicable",
                    crate::engine::Decision::Indeterminate => "indeterminate",
                };
                let rules: Vec<String> = e
                    .rule_ids
                    .iter()
                    .map(|r| format!("<code>{}</code>", esc(r)))
                    .collect();
                let _ = write!(
                    h,
                    r#"<div id="result" class="result" role="status" data-decision="{d}">
<p class="decision"><span class="cell {kind}">{d}</span></p>
<dl><dt>Rules</dt><dd id="result-rules">{rules}</dd><dt>Reason</dt><dd id="result-reason">{reason}</dd><dt>Revision</dt><dd><code>{rev}</code></dd>"#,
                    d = e.decision.as_str(),
                    rules = if rules.is_empty() {
                        "none".to_string()
                    } else {
                        rules.join(", ")
                    },
                    reason = prose(&e.reason.to_string()),
                    rev = esc(&e.policy_revision),
                );
                if !e.obligations.is_empty() {
                    let ids: Vec<String> = e
                        .obligations
                        .iter()
                        .map(|o| format!("<code>{}</code>", esc(&o.id)))
                        .collect();
                    let _ = write!(h, "<dt>Obligations</dt><dd>{}</dd>", ids.join(", "));
                }
                h.push_str("</dl></div>\n");
            }
            Some(Tried::Purposes(permitted)) => permitted_section(h, permitted),
        }
        h.push_str("</section>\n");
    }

    fn rules_section(&self, h: &mut String) {
        h.push_str(
            r#"<section id="rules" aria-labelledby="rules-title">
<h2 id="rules-title">Rules</h2>
<ol class="rules">
"#,
        );
        for rule in self.policy.rules() {
            let _ = write!(
                h,
                r#"<li id="rule-{id}"><p><code class="rule-id">{id}</code> <span class="effect {effect}">{effect}</span>{mode}</p><p>{text}</p>"#,
                id = esc(&rule.id),
                effect = rule.effect.as_str(),
                mode = if rule.mode == crate::engine::Mode::Monitor {
                    r#" <span class="monitor">monitor only</span>"#
                } else {
                    ""
                },
                text = prose(&rule.describe()),
            );
            if !rule.description.is_empty() {
                let _ = write!(
                    h,
                    r#"<p class="description">{}</p>"#,
                    prose(&rule.description)
                );
            }
            h.push_str("</li>\n");
        }
        h.push_str("</ol>\n");
        if let Some(claims) = self.policy.claims() {
            h.push_str(
                r#"<h3>Who may claim which purposes</h3><p>A subject outside these entries is denied whatever it claims. The matrix above shows what the rules allow a subject who may claim the purpose.</p><table class="claims"><thead><tr><th scope="col">Claim</th><th scope="col">Subjects</th><th scope="col">Purposes</th></tr></thead><tbody>"#,
            );
            for claim in claims {
                let code = |items: &mut dyn Iterator<Item = String>| {
                    items
                        .map(|s| format!("<code>{}</code>", esc(&s)))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = write!(
                    h,
                    "<tr><th scope=\"row\"><code>{}</code></th><td>{}</td><td>{}</td></tr>",
                    esc(&claim.id),
                    code(&mut claim.subjects.iter().cloned()),
                    code(&mut claim.purposes.iter().map(ToString::to_string)),
                );
            }
            h.push_str("</tbody></table>\n");
        }
        h.push_str("</section>\n");
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

/// The answer to the reverse question: each permitted purpose with the
/// rules that permit it and the obligations it carries.
fn permitted_section(h: &mut String, permitted: &PermittedPurposes) {
    let count = permitted.purposes.len();
    let _ = write!(
        h,
        r#"<div id="result" class="result" role="status" data-decision="PERMITTED_PURPOSES" data-count="{count}">
<p class="decision">{headline}</p>
"#,
        headline = match count {
            0 => "No purpose is permitted for this data.".to_string(),
            1 => "One purpose is permitted for this data:".to_string(),
            n => format!("{n} purposes are permitted for this data:"),
        },
    );
    if count > 0 {
        h.push_str(
            r#"<table id="result-purposes"><thead><tr><th scope="col">Purpose</th><th scope="col">Rules</th><th scope="col">Obligations</th></tr></thead><tbody>"#,
        );
        let codes = |ids: &mut dyn Iterator<Item = &str>| -> String {
            let shown: Vec<String> = ids.map(|id| format!("<code>{}</code>", esc(id))).collect();
            if shown.is_empty() {
                "none".to_string()
            } else {
                shown.join(", ")
            }
        };
        for p in &permitted.purposes {
            let _ = write!(
                h,
                r#"<tr data-purpose="{id}"><th scope="row"><code>{id}</code></th><td>{rules}</td><td>{obligations}</td></tr>"#,
                id = esc(&p.purpose),
                rules = codes(&mut p.rule_ids.iter().map(|r| &**r)),
                obligations = codes(&mut p.obligations.iter().map(|o| &*o.id)),
            );
        }
        h.push_str("</tbody></table>\n");
    }
    let _ = writeln!(
        h,
        r#"<dl><dt>Revision</dt><dd><code>{}</code></dd></dl></div>"#,
        esc(&permitted.policy_revision)
    );
}

/// A choice of one node of `tree`; with `any`, a first option of that
/// label leaves the field empty.
fn select(
    h: &mut String,
    name: &str,
    title: &str,
    tree: &Taxonomy,
    chosen: &str,
    any: Option<&str>,
) {
    let _ = write!(
        h,
        r#"<label for="{name}">{title}</label><select id="{name}" name="{name}">"#
    );
    if let Some(label) = any {
        let selected = if chosen.is_empty() { " selected" } else { "" };
        let _ = write!(h, r#"<option value=""{selected}>{}</option>"#, esc(label));
    }
    for (_, node) in tree.nodes() {
        let selected = if &*node.id == chosen { " selected" } else { "" };
        let _ = write!(
            h,
            r#"<option value="{id}"{selected}>{id}</option>"#,
            id = esc(&node.id)
        );
    }
    h.push_str("</select>\n");
}

fn text_input(h: &mut String, name: &str, title: &str, value: &str, placeholder: &str) {
    let _ = writeln!(
        h,
        r#"<label for="{name}">{title}</label><input id="{name}" name="{name}" type="text" value="{}" placeholder="{}" autocomplete="off">"#,
        esc(value),
        esc(placeholder)
    );
}

fn tree_section(h: &mut String, id: &str, title: &str, tree: &Taxonomy) {
    let _ = write!(
        h,
        r#"<section id="{id}" aria-labelledby="{id}-title"><h2 id="{id}-title">{title}</h2>
<ul class="tree">"#
    );
    for root in tree.roots() {
        node(h, tree, root);
    }
    h.push_str("</ul></section>\n");
}

fn node(h: &mut String, tree: &Taxonomy, idx: crate::engine::NodeIdx) {
    let Some(n) = tree.node(idx) else { return };
    let _ = write!(
        h,
        "<li><code>{}</code>{}",
        esc(&n.id),
        if n.description.is_empty() {
            String::new()
        } else {
            format!(" — {}", prose(&n.description))
        }
    );
    if !n.children.is_empty() {
        h.push_str("<ul>");
        for &child in &n.children {
            node(h, tree, child);
        }
        h.push_str("</ul>");
    }
    h.push_str("</li>\n");
}
