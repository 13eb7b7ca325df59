//! Action search (`POST /access/v1/search/action`): the purposes a
//! resource may serve (the reverse question, through the [`Decider`]),
//! paged by a token bound to the request's entities.
//!
//! [`Decider`]: crate::decide::Decider

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use opentelemetry_sdk::trace::Span;
use serde_json::{Map, Value};

use super::AuthZen;
use super::call::{Call, Refusal, encode};
use super::mapping::{self, Asked, Source};
use crate::audit::Via;

impl AuthZen {
    pub(super) fn search_action(
        &self,
        call: Call,
        span: Option<&mut Span>,
    ) -> Result<Bytes, Refusal> {
        let req = mapping::request(
            Source::alone(&call.body),
            Asked::ActionSearch,
            &call.request_id,
        )?;
        let page = Page::of(&call.body)?;
        let via = Via {
            face: "authzen.search.action",
            subject_type: Some(mapping::subject_type(Source::alone(&call.body))?),
        };
        let permitted = self
            .decider
            .permitted_purposes(&req, span, via)
            .map_err(|invalid| Refusal::bad(invalid.to_string()))?;
        let fingerprint = fingerprint(&call.body);
        let (offset, limit) = match &page.token {
            None => (0, page.limit),
            Some(token) => {
                let (offset, limit) = read_token(token, fingerprint)?;
                if page.limit.is_some_and(|l| l != limit) {
                    return Err(Refusal::bad(format!(
                        "`page.limit` must stay {limit}, as on the first page, while `page.token` continues it"
                    )));
                }
                (offset, Some(limit))
            }
        };
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
            Some(limit) if end < total && limit > 0 => write_token(end, limit, fingerprint),
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

/// What a page token is bound to: the request's entities, which the
/// specification says must not change between pages (read with keys in
/// order, so a client that writes them in another order is not refused).
fn fingerprint(body: &Map<String, Value>) -> u64 {
    use std::hash::{Hash, Hasher};
    fn feed(v: &Value, h: &mut std::hash::DefaultHasher) {
        match v {
            Value::Null => 0u8.hash(h),
            Value::Bool(b) => (1u8, b).hash(h),
            Value::Number(n) => (2u8, n.to_string()).hash(h),
            Value::String(s) => (3u8, s).hash(h),
            Value::Array(items) => {
                (4u8, items.len()).hash(h);
                items.iter().for_each(|i| feed(i, h));
            }
            Value::Object(fields) => {
                let mut keys: Vec<&String> = fields.keys().collect();
                keys.sort();
                (5u8, keys.len()).hash(h);
                for k in keys {
                    k.hash(h);
                    if let Some(v) = fields.get(k) {
                        feed(v, h);
                    }
                }
            }
        }
    }
    // Fixed keys: a token stays valid across the server's replicas.
    let mut hasher = std::hash::DefaultHasher::new();
    for key in ["subject", "resource", "context"] {
        feed(body.get(key).unwrap_or(&Value::Null), &mut hasher);
    }
    hasher.finish()
}

const TOKEN_VERSION: &str = "pg1";

/// A token for the page from `offset`, `limit` results long.
fn write_token(offset: usize, limit: usize, fingerprint: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "{TOKEN_VERSION}:{offset}:{limit}:{fingerprint:016x}"
    ))
}

/// The offset and limit a token continues with, if it was made for this
/// request.
fn read_token(token: &str, fingerprint: u64) -> Result<(usize, usize), Refusal> {
    let garbled = || Refusal::bad("`page.token` is not a token this server gave out");
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(garbled)?;
    let mut parts = text.split(':');
    let (Some(TOKEN_VERSION), Some(offset), Some(limit), Some(made_for), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(garbled());
    };
    let offset: usize = offset.parse().map_err(|_| garbled())?;
    let limit: usize = limit.parse().map_err(|_| garbled())?;
    if made_for != format!("{fingerprint:016x}") {
        return Err(Refusal::bad(
            "`page.token` was given for another request: the subject, resource and context must stay as they were on the first page",
        ));
    }
    Ok((offset, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_continues_only_the_request_it_was_made_for() {
        let token = write_token(2, 2, 7);
        assert_eq!(read_token(&token, 7).map_err(|r| r.message), Ok((2, 2)));
        assert!(read_token(&token, 8).is_err_and(|r| r.message.contains("another request")));
        for garbled in ["", "!!", "cGcxOjI", &write_token(2, 2, 7).replace('c', "d")] {
            assert!(read_token(garbled, 7).is_err(), "{garbled}");
        }
    }

    #[test]
    fn a_fingerprint_changes_with_the_entities_not_their_key_order() {
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
        assert_eq!(fingerprint(&a), fingerprint(&reordered));
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
