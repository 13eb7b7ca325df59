//! The headers a call states its question in, read so that there is one
//! reading only.
//!
//! A decided header (`x-purpose`, `x-subject`, ...) may appear once: with
//! two, the sidecar and the app could each believe a different one, so the
//! call is refused. Its value is visible ASCII within the limit of its
//! field. Headers that only look different (`x_purpose`, which CGI and WSGI
//! servers merge with `x-purpose`) never reach the app, nor do the
//! sidecar's own `x-purposegate-*` headers from a caller. After the
//! decision the app receives exactly the values that were decided
//! ([`decided`]).

use purposegate_engine::{
    Deidentification, MAX_ID_BYTES, MAX_LIST_ENTRIES, MAX_ORIGINS, MAX_SUBJECT_ID_BYTES,
    MAX_TEXT_BYTES,
};
use std::borrow::Cow;

use hyper::header::HeaderName;
use purposegate_proto::v1 as pb;

pub const PURPOSE: &str = "x-purpose";
pub const SUBJECT: &str = "x-subject";
pub const TENANT: &str = "x-tenant";
pub const ROLES: &str = "x-subject-roles";
pub const DATA_TENANT: &str = "x-data-tenant";
/// Whose data it is, within the data's tenant: their choices are read.
pub const DATA_SUBJECT: &str = "x-data-subject";
pub const DEIDENTIFICATION: &str = "x-data-deidentification";
pub const GROUP_SIZE: &str = "x-data-group-size";
pub const ORIGIN: &str = "x-data-origin";
pub const CUSTOMER_INSTRUCTION: &str = "x-customer-instruction";
pub const REQUEST_ID: &str = "x-request-id";
/// The obligations of a permit, for the app to fulfil (JSON).
pub const OBLIGATIONS: &str = "x-purposegate-obligations";

/// Headers that make frameworks run another method than the request's
/// (read by Google APIs, Jersey, ASP.NET, Symfony and Laravel): the method
/// judged would not be the method served, so a call carrying one, in any
/// spelling, is refused.
pub const METHOD_OVERRIDES: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The method-override header `name` is, in any spelling.
pub fn overrides_method(name: &str) -> Option<&'static str> {
    METHOD_OVERRIDES.iter().copied().find(|m| folds_to(name, m))
}

/// Whether `name` equals `lower` (lower case, `-`) once `_` is read as `-`
/// and case is folded, as CGI and WSGI servers read names.
pub fn folds_to(name: &str, lower: &str) -> bool {
    name.len() == lower.len() && name.bytes().zip(lower.bytes()).all(|(a, b)| fold(a) == b)
}

/// Whether `name` starts with `lower` and goes on, folded as [`folds_to`].
pub fn folds_to_prefix(name: &str, lower: &str) -> bool {
    name.len() > lower.len() && name.bytes().zip(lower.bytes()).all(|(a, b)| fold(a) == b)
}

fn fold(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

/// The headers the sidecar decides on, and how long each may be.
pub const DECIDED: [(&str, Limit); 11] = [
    (PURPOSE, Limit::One(MAX_ID_BYTES)),
    (SUBJECT, Limit::One(MAX_SUBJECT_ID_BYTES)),
    (TENANT, Limit::One(MAX_ID_BYTES)),
    (ROLES, Limit::List(MAX_LIST_ENTRIES)),
    (DATA_TENANT, Limit::One(MAX_ID_BYTES)),
    (DATA_SUBJECT, Limit::One(MAX_SUBJECT_ID_BYTES)),
    (DEIDENTIFICATION, Limit::One(32)),
    (GROUP_SIZE, Limit::One(20)),
    (ORIGIN, Limit::List(MAX_ORIGINS)),
    (CUSTOMER_INSTRUCTION, Limit::Text(MAX_TEXT_BYTES)),
    (REQUEST_ID, Limit::Text(MAX_ID_BYTES)),
];

/// What a decided header may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// One id of at most this many bytes; a comma (how proxies merge
    /// repeated headers) is refused.
    One(usize),
    /// Free text of at most this many bytes.
    Text(usize),
    /// A comma-separated list of at most this many ids.
    List(usize),
}

/// What the caller's decided headers say, each trimmed; empty when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stated<'h> {
    values: [&'h str; DECIDED.len()],
}

/// Why a call's headers cannot be read as one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableHeaders(pub String);

impl std::fmt::Display for UnreadableHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'h> Stated<'h> {
    /// Reads `headers` (name, value) as a call carries them. Names are
    /// compared case-insensitively.
    pub fn read(
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
    ) -> Result<Stated<'h>, UnreadableHeaders> {
        let mut stated = Stated::default();
        let mut seen = [false; DECIDED.len()];
        for (name, value) in headers {
            if let Some(overriding) = overrides_method(name) {
                return Err(UnreadableHeaders(format!(
                    "header `{overriding}` would make the app run another method than the one judged; it is refused"
                )));
            }
            let Some(i) = DECIDED
                .iter()
                .position(|(decided, _)| decided.eq_ignore_ascii_case(name))
            else {
                continue;
            };
            let (decided, limit) = DECIDED.get(i).copied().unwrap_or((PURPOSE, Limit::One(0)));
            let (Some(flag), Some(slot)) = (seen.get_mut(i), stated.values.get_mut(i)) else {
                continue;
            };
            if std::mem::replace(flag, true) {
                return Err(UnreadableHeaders(format!(
                    "header `{decided}` appears more than once; a decided header may appear once"
                )));
            }
            *slot = read_value(decided, limit, value)?;
        }
        Ok(stated)
    }

    /// The trimmed value of decided header `name`; empty when absent.
    pub fn get(&self, name: &str) -> &'h str {
        DECIDED
            .iter()
            .position(|(decided, _)| *decided == name)
            .and_then(|i| self.values.get(i))
            .copied()
            .unwrap_or("")
    }

    /// A list header's entries.
    pub fn list(&self, name: &str) -> Vec<String> {
        split_list(self.get(name))
    }
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn read_value<'h>(name: &str, limit: Limit, value: &'h [u8]) -> Result<&'h str, UnreadableHeaders> {
    let bad = |problem: String| UnreadableHeaders(format!("header `{name}` {problem}"));
    if value
        .iter()
        .any(|&b| !(b == b'\t' || (0x20..0x7f).contains(&b)))
    {
        return Err(bad(
            "holds bytes other than visible ASCII; it is refused".to_string()
        ));
    }
    // Visible ASCII and tabs: its whitespace is ASCII's.
    let text =
        std::str::from_utf8(value.trim_ascii()).map_err(|_| bad("is not text".to_string()))?;
    match limit {
        Limit::One(max) | Limit::Text(max) if text.len() > max => Err(bad(format!(
            "is {} bytes long; at most {max} are accepted",
            text.len()
        ))),
        Limit::One(_) if text.contains(',') => Err(bad(
            "holds a list; it takes one value (repeated headers are refused)".to_string(),
        )),
        Limit::List(max) => {
            let entries = split_list(text);
            if entries.len() > max {
                return Err(bad(format!(
                    "lists {} entries; at most {max} are accepted",
                    entries.len()
                )));
            }
            if let Some(long) = entries.iter().find(|e| e.len() > MAX_ID_BYTES) {
                return Err(bad(format!(
                    "has an entry {} bytes long; at most {MAX_ID_BYTES} are accepted",
                    long.len()
                )));
            }
            Ok(text)
        }
        _ => Ok(text),
    }
}

/// Whether a request header must not reach the app as the caller wrote
/// it: a decided header or one of the sidecar's own `x-purposegate-*`
/// headers, in any spelling that folds to it (`_` for `-`, any case). The
/// decided values are put back by [`decided`].
pub fn is_reserved(name: &str) -> bool {
    is_decided(name) || is_own(name)
}

/// Whether a request header is a decided one, in any spelling.
pub fn is_decided(name: &str) -> bool {
    DECIDED.iter().any(|(decided, _)| folds_to(name, decided))
}

/// Whether a request header is one of the sidecar's own `x-purposegate-*`
/// headers (in any spelling), which no caller may send to the app.
pub fn is_own(name: &str) -> bool {
    folds_to_prefix(name, "x-purposegate-")
}

/// The decided headers the app receives for `request` (a question the
/// sidecar asked), with `obligations` of the permit: exactly the values
/// decided, none empty. Names are built at compile time and values
/// borrowed where they are one field: this runs on every permitted call.
pub fn decided<'a>(request: &'a pb::CheckRequest, obligations: &[pb::Obligation]) -> Decided<'a> {
    let mut out = Decided(Vec::with_capacity(DECIDED.len() + 1));
    out.push((name::PURPOSE, Cow::Borrowed(request.purpose.as_str())));
    if let Some(subject) = &request.subject {
        out.push((name::SUBJECT, Cow::Borrowed(subject.id.as_str())));
        out.push((name::TENANT, Cow::Borrowed(subject.tenant.as_str())));
        out.push((name::ROLES, joined(&subject.roles)));
    }
    if let Some(resource) = &request.resource {
        out.push((
            name::DATA_TENANT,
            Cow::Borrowed(resource.owner_tenant.as_str()),
        ));
        out.push((
            name::DATA_SUBJECT,
            Cow::Borrowed(resource.data_subject.as_str()),
        ));
        let deidentification = pb::Deidentification::try_from(resource.deidentification)
            .ok()
            .and_then(|d| Deidentification::parse(d.as_str_name()))
            .map_or("", |d| d.as_str());
        out.push((name::DEIDENTIFICATION, Cow::Borrowed(deidentification)));
        if resource.group_size != 0 {
            out.push((
                name::GROUP_SIZE,
                Cow::Owned(resource.group_size.to_string()),
            ));
        }
        out.push((name::ORIGIN, joined(&resource.origin)));
    }
    if let Some(context) = &request.context {
        out.push((
            name::CUSTOMER_INSTRUCTION,
            Cow::Borrowed(context.customer_instruction.as_str()),
        ));
    }
    out.push((name::REQUEST_ID, Cow::Borrowed(request.request_id.as_str())));
    if !obligations.is_empty() {
        out.push((name::OBLIGATIONS, Cow::Owned(obligations_json(obligations))));
    }
    out
}

/// The decided headers of one permit, each name once and no value empty.
#[derive(Debug, Default)]
pub struct Decided<'a>(Vec<(HeaderName, Cow<'a, str>)>);

impl<'a> Decided<'a> {
    /// Adds `name` with `value`, unless the value is empty.
    fn push(&mut self, entry: (HeaderName, Cow<'a, str>)) {
        if !entry.1.is_empty() {
            self.0.push(entry);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &(HeaderName, Cow<'a, str>)> {
        self.0.iter()
    }

    /// Whether `name` (as a map spells it) is among them.
    pub fn names(&self, name: &str) -> bool {
        self.iter().any(|(decided, _)| decided.as_str() == name)
    }
}

/// The decided headers' names, and `baggage`'s, as [`HeaderName`]s built
/// at compile time (a name parsed at run time costs more than the rest of
/// setting it).
pub mod name {
    use hyper::header::HeaderName;

    pub const PURPOSE: HeaderName = HeaderName::from_static(super::PURPOSE);
    pub const SUBJECT: HeaderName = HeaderName::from_static(super::SUBJECT);
    pub const TENANT: HeaderName = HeaderName::from_static(super::TENANT);
    pub const ROLES: HeaderName = HeaderName::from_static(super::ROLES);
    pub const DATA_TENANT: HeaderName = HeaderName::from_static(super::DATA_TENANT);
    pub const DATA_SUBJECT: HeaderName = HeaderName::from_static(super::DATA_SUBJECT);
    pub const DEIDENTIFICATION: HeaderName = HeaderName::from_static(super::DEIDENTIFICATION);
    pub const GROUP_SIZE: HeaderName = HeaderName::from_static(super::GROUP_SIZE);
    pub const ORIGIN: HeaderName = HeaderName::from_static(super::ORIGIN);
    pub const CUSTOMER_INSTRUCTION: HeaderName =
        HeaderName::from_static(super::CUSTOMER_INSTRUCTION);
    pub const REQUEST_ID: HeaderName = HeaderName::from_static(super::REQUEST_ID);
    pub const OBLIGATIONS: HeaderName = HeaderName::from_static(super::OBLIGATIONS);
    /// W3C baggage, where purpose contexts travel.
    pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
}

/// A list header's value: the entries joined with commas.
fn joined(list: &[String]) -> Cow<'_, str> {
    match list {
        [] => Cow::Borrowed(""),
        [one] => Cow::Borrowed(one.as_str()),
        many => Cow::Owned(many.join(",")),
    }
}

/// `[{"id":"log-access","params":{"retention":"30d"}}]`, in ASCII (other
/// characters as `\u` escapes) so it fits a header.
pub fn obligations_json(obligations: &[pb::Obligation]) -> String {
    let list: Vec<serde_json::Value> = obligations
        .iter()
        .map(|o| {
            let params: std::collections::BTreeMap<&String, &String> = o.params.iter().collect();
            serde_json::json!({ "id": o.id, "params": params })
        })
        .collect();
    let text = serde_json::Value::Array(list).to_string();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() && !c.is_ascii_control() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<'a>(headers: &[(&'a str, &'a str)]) -> Result<Stated<'a>, UnreadableHeaders> {
        Stated::read(headers.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    #[test]
    fn each_decided_header_is_read_once() {
        let stated = read(&[
            ("X-Purpose", " provide "),
            ("x-subject-roles", "a, b,,c"),
            ("other", "x"),
            ("other", "y"),
        ])
        .unwrap();
        assert_eq!(stated.get(PURPOSE), "provide");
        assert_eq!(stated.list(ROLES), ["a", "b", "c"]);
        assert_eq!(stated.get(SUBJECT), "");
        let twice = read(&[("x-purpose", "provide"), ("x-purpose", "advertising")]);
        assert!(
            twice
                .unwrap_err()
                .0
                .contains("`x-purpose` appears more than once")
        );
        let case = read(&[("x-subject", "a"), ("X-Subject", "b")]);
        assert!(case.is_err());
    }

    #[test]
    fn values_are_refused_when_ambiguous_or_too_long() {
        assert!(read(&[("x-purpose", "provide,advertising")]).is_err());
        assert!(read(&[("x-purpose", &"p".repeat(MAX_ID_BYTES + 1))]).is_err());
        assert!(read(&[("x-data-origin", &vec!["c"; MAX_ORIGINS + 1].join(","))]).is_err());
        assert!(
            Stated::read([("x-subject", &b"caf\xe9"[..])])
                .unwrap_err()
                .0
                .contains("visible ASCII")
        );
        assert!(read(&[("x-customer-instruction", "contract 7, annex B")]).is_ok());
    }

    #[test]
    fn look_alike_headers_are_reserved() {
        for name in [
            "x_purpose",
            "X_Subject",
            "x-data_tenant",
            "x-purposegate-obligations",
            "x_purposegate_obligations",
            "x-purpose",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        for name in ["x-purposes", "x-purposegate-", "content-type", "x_other"] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    #[test]
    fn a_method_override_is_refused() {
        for name in [
            "X-HTTP-Method-Override",
            "x_http_method",
            "x-method-override",
        ] {
            let refused = read(&[("x-purpose", "provide"), (name, "DELETE")]).unwrap_err();
            assert!(refused.0.contains("another method"), "{refused}");
        }
    }

    #[test]
    fn obligations_travel_as_ascii_json() {
        let json = obligations_json(&[pb::Obligation {
            id: "notify".into(),
            params: [("to".to_string(), "dpo@ex\u{e4}mple".to_string())].into(),
        }]);
        assert_eq!(
            json,
            r#"[{"id":"notify","params":{"to":"dpo@ex\u00e4mple"}}]"#
        );
        assert!(json.is_ascii());
    }
}
