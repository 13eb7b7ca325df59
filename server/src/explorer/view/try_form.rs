//! The page's try form: a request to decide, as a plain GET form echoing
//! what it was given, and its result: `Check`'s answer, or with no
//! purpose the purposes the data may serve.

use std::fmt::Write as _;

use super::{Page, Tried, esc, prose};
use crate::engine::{PermittedPurposes, Taxonomy};

impl Page<'_> {
    pub(super) fn try_section(&self, h: &mut String) {
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
        text_input(
            h,
            "data_subject",
            "Data subject",
            form.get("data_subject"),
            "whose data it is (their choices are read)",
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
                if let Some(facts) = &e.choices {
                    choices_read(h, facts);
                }
                h.push_str("</dl></div>\n");
            }
            Some(Tried::Purposes(permitted)) => permitted_section(h, permitted),
        }
        h.push_str("</section>\n");
    }
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

/// The choices a tried decision read: the tenant's and the data subject's,
/// each with its state and time, and the store revision.
fn choices_read(h: &mut String, facts: &crate::engine::ChoiceFacts) {
    let list = |choices: &Option<Vec<crate::engine::Choice>>| match choices {
        None => "not read".to_string(),
        Some(c) if c.is_empty() => "none recorded".to_string(),
        Some(c) => c
            .iter()
            .map(|c| {
                let purpose = if c.purpose.is_empty() {
                    "all processing".to_string()
                } else {
                    format!("<code>{}</code>", esc(&c.purpose))
                };
                format!(
                    "{purpose} {} {}",
                    c.state.as_str(),
                    esc(&crate::engine::rfc3339(c.at))
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    };
    let _ = write!(
        h,
        r#"<dt>Choices read</dt><dd id="result-choices">tenant: {}<br>data subject: {}<br>revision {}</dd>"#,
        list(&facts.tenant),
        list(&facts.subject),
        facts.revision
    );
}
