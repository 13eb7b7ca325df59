//! The explorer page as HTML, rendered on the server from the policy and
//! its matrix, so it reads without JavaScript: the cells explain themselves
//! through `:target` links and the try form is a plain GET form.

mod matrix;
mod try_form;

use std::fmt::Write as _;

use crate::engine::{Evaluation, Matrix, PermittedPurposes, Policy, Taxonomy};

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
