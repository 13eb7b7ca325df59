//! Action search (`POST /access/v1/search/action`): the purposes a
//! resource may serve (the reverse question, through the [`Decider`]),
//! paged from one computed answer per question and revision, by keyed
//! tokens checked before any work ([`pages`]).
//!
//! [`Decider`]: crate::decide::Decider

use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_sdk::trace::Span;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::AuthZen;
use super::call::{Call, Refusal, encode};
use super::mapping::{self, Asked, Source};
use crate::audit::Via;

mod pages;

pub(super) use pages::Pages;
use pages::Question;

impl AuthZen {
    pub(super) fn search_action(
        &self,
        call: Call,
        span: Option<&mut Span>,
    ) -> Result<Bytes, Refusal> {
        // Before any work: the page, the question's digest and the token.
        let page = Page::of(&call.body)?;
        let question = question_digest(&call.body);
        let policy = self.decider.policy();
        let revision = policy.revision();
        let (offset, limit) = match &page.token {
            None => (0, page.limit),
            Some(token) => {
                let given = self.pages.read_token(token, &question, revision)?;
                if page.limit.is_some_and(|l| l != given.limit) {
                    return Err(Refusal::bad(format!(
                        "`page.limit` must stay {}, as on the first page, while `page.token` continues it",
                        given.limit
                    )));
                }
                (given.offset, Some(given.limit))
            }
        };
        let req = mapping::request(
            Source::alone(&call.body),
            Asked::ActionSearch,
            &call.request_id,
        )?;
        let via = Via {
            face: "authzen.search.action",
            subject_type: Some(mapping::subject_type(Source::alone(&call.body))?),
        };
        // One computed answer per (question, revision); every request
        // still gets its own decision log line.
        let permitted = self
            .decider
            .permitted_purposes_with(&req, span, via, || {
                if let Some(kept) = self.pages.answer(&question, revision) {
                    return Ok(kept);
                }
                let answer = Arc::new(policy.permitted_purposes(&req)?);
                self.pages.keep(question, &answer);
                Ok(answer)
            })
            .map_err(|invalid| Refusal::bad(invalid.to_string()))?;
        let total = permitted.purposes.len();
        let end = match limit {
            None => total,
            Some(limit) => offset.saturating_add(limit).min(total),
        };
        let shown = permitted
            .purposes
            .get(offset.min(total)..end.max(offset.min(total)))
            .unwrap_or_default();
        let next_token = match limit {
            Some(limit) if end < total && limit > 0 => {
                self.pages
                    .write_token(&question, &permitted.policy_revision, end, limit)
            }
            _ => String::new(),
        };
        let results: Vec<mapping::Action> = shown.iter().map(mapping::action).collect();
        encode(&SearchResults {
            page: PageOut {
                next_token,
                count: results.len(),
                total,
            },
            results,
            context: SearchContext {
                policy_revision: permitted.policy_revision.clone(),
                ttl_seconds: permitted.ttl_seconds,
            },
        })
    }
}

// The answers are structs, so their keys come in this order whatever
// features `serde_json` is built with.

/// An action search's answer: `page` first, as the specification
/// recommends, so a reader can show progress before the results.
#[derive(Debug, serde::Serialize)]
struct SearchResults {
    page: PageOut,
    results: Vec<mapping::Action>,
    context: SearchContext,
}

#[derive(Debug, serde::Serialize)]
struct PageOut {
    next_token: String,
    count: usize,
    total: usize,
}

#[derive(Debug, serde::Serialize)]
struct SearchContext {
    policy_revision: Arc<str>,
    ttl_seconds: u32,
}

/// The `page` of a search request.
#[derive(Debug, Default)]
struct Page {
    token: Option<String>,
    limit: Option<usize>,
}

impl Page {
    fn of(body: &Map<String, Value>) -> Result<Self, Refusal> {
        let Some(page) = body.get("page").filter(|v| !v.is_null()) else {
            return Ok(Page::default());
        };
        let page = mapping::object(page, "page")?;
        let token = match page.get("token") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) if t.is_empty() => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(Refusal::bad("`page.token` must be a string")),
        };
        let limit = match page.get("limit") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        Refusal::bad("`page.limit` must be a non-negative whole number")
                    })?,
            ),
        };
        Ok(Page { token, limit })
    }
}

/// The question of a search: its entities, which the specification
/// says must not change between pages (read with keys in order, so a
/// client that writes them in another order asks the same question),
/// as a SHA-256 digest.
fn question_digest(body: &Map<String, Value>) -> Question {
    fn feed(v: &Value, h: &mut Sha256) {
        let text = |h: &mut Sha256, tag: u8, s: &str| {
            h.update([tag]);
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        };
        match v {
            Value::Null => h.update([0u8]),
            Value::Bool(b) => h.update([1u8, u8::from(*b)]),
            Value::Number(n) => text(h, 2, &n.to_string()),
            Value::String(s) => text(h, 3, s),
            Value::Array(items) => {
                h.update([4u8]);
                h.update((items.len() as u64).to_le_bytes());
                items.iter().for_each(|i| feed(i, h));
            }
            Value::Object(fields) => {
                let mut keys: Vec<&String> = fields.keys().collect();
                keys.sort();
                h.update([5u8]);
                h.update((keys.len() as u64).to_le_bytes());
                for k in keys {
                    text(h, 3, k);
                    if let Some(v) = fields.get(k) {
                        feed(v, h);
                    }
                }
            }
        }
    }
    let mut hasher = Sha256::new();
    for key in ["subject", "resource", "context"] {
        feed(body.get(key).unwrap_or(&Value::Null), &mut hasher);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_changes_with_the_entities_not_their_key_order_nor_the_page() {
        let body = |text: &str| match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            other => panic!("{other:?}"),
        };
        let a =
            body(r#"{"subject": {"type": "u", "id": "a"}, "resource": {"type": "c", "id": "1"}}"#);
        let reordered = body(
            r#"{"resource": {"id": "1", "type": "c"}, "subject": {"id": "a", "type": "u"}, "page": {"token": "x"}}"#,
        );
        let b =
            body(r#"{"subject": {"type": "u", "id": "b"}, "resource": {"type": "c", "id": "1"}}"#);
        // A string cannot pass for the parts of another.
        let glued = body(r#"{"subject": {"type": "u", "id": "ab"}, "resource": {"type": "c"}}"#);
        let split = body(r#"{"subject": {"type": "ua", "id": "b"}, "resource": {"type": "c"}}"#);
        assert_eq!(question_digest(&a), question_digest(&reordered));
        assert_ne!(question_digest(&a), question_digest(&b));
        assert_ne!(question_digest(&glued), question_digest(&split));
    }
}
