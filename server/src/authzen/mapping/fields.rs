//! The strict readers of one JSON field each, for the mapping: a string,
//! a list or a map of strings, a de-identification, a group size; a field
//! in snake_case or lowerCamelCase (never both), strings and lists bounded
//! before they are copied, every problem naming the field's path.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Problem, kind, problem};
use crate::engine::{self, Deidentification};

/// The value of `snake` (or its lowerCamelCase spelling) in `obj`, if any.
pub(super) fn field<'a>(
    obj: &'a Map<String, Value>,
    snake: &str,
    path: &str,
) -> Result<Option<&'a Value>, Problem> {
    let camel = lower_camel(snake);
    match (obj.get(snake), obj.get(&camel).filter(|_| camel != snake)) {
        (Some(_), Some(_)) => Err(problem(format!(
            "`{path}.{snake}` and `{path}.{camel}` are the same field; give it once"
        ))),
        (Some(v), None) | (None, Some(v)) => Ok(Some(v).filter(|v| !v.is_null())),
        (None, None) => Ok(None),
    }
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Longest string copied out of a request: the engine's own limits
/// (`DecisionRequest::validate`) are tighter and name the field; this one
/// only keeps a default repeated over a batch from being copied whole.
pub(super) const MAX_STRING_BYTES: usize = engine::MAX_SUBJECT_ID_BYTES;
/// Most entries of a list or map copied out of a request (the engine's
/// limits, again, are the ones that decide).
pub(super) const MAX_ENTRIES: usize = engine::MAX_ORIGINS;

pub(super) fn string(v: &Value, path: &str) -> Result<String, Problem> {
    match v.as_str() {
        Some(s) if s.len() > MAX_STRING_BYTES => Err(problem(format!(
            "`{path}` is {} bytes long; at most {MAX_STRING_BYTES} are accepted",
            s.len()
        ))),
        Some(s) => Ok(s.to_string()),
        None => Err(problem(format!(
            "`{path}` must be a string, not {}",
            kind(v)
        ))),
    }
}

fn at_most(entries: usize, path: &str) -> Result<(), Problem> {
    if entries > MAX_ENTRIES {
        return Err(problem(format!(
            "`{path}` has {entries} entries; at most {MAX_ENTRIES} are accepted"
        )));
    }
    Ok(())
}

/// A string that must be there and not be empty.
pub(super) fn required_string(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<String, Problem> {
    let full = format!("{path}.{key}");
    match obj.get(key).filter(|v| !v.is_null()) {
        None => Err(problem(format!("`{full}` is missing"))),
        Some(v) => {
            let s = string(v, &full)?;
            if s.is_empty() {
                return Err(problem(format!("`{full}` must not be empty")));
            }
            Ok(s)
        }
    }
}

pub(super) fn optional_string(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<String, Problem> {
    match field(obj, key, path)? {
        None => Ok(String::new()),
        Some(v) => string(v, &format!("{path}.{key}")),
    }
}

pub(super) fn string_list(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Vec<String>, Problem> {
    let full = format!("{path}.{key}");
    match field(obj, key, path)? {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            at_most(items.len(), &full)?;
            items
                .iter()
                .enumerate()
                .map(|(i, v)| string(v, &format!("{full}[{i}]")))
                .collect()
        }
        Some(v) => Err(problem(format!(
            "`{full}` must be an array of strings, not {}",
            kind(v)
        ))),
    }
}

pub(super) fn string_map(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<BTreeMap<String, String>, Problem> {
    let full = format!("{path}.{key}");
    match field(obj, key, path)? {
        None => Ok(BTreeMap::new()),
        Some(Value::Object(entries)) => {
            at_most(entries.len(), &full)?;
            entries
                .iter()
                .map(|(k, v)| {
                    let key = string(&Value::String(k.clone()), &format!("{full} key"))?;
                    Ok((key, string(v, &format!("{full}.{k}"))?))
                })
                .collect()
        }
        Some(v) => Err(problem(format!(
            "`{full}` must be an object of strings, not {}",
            kind(v)
        ))),
    }
}

pub(super) fn deidentification(v: &Value, path: &str) -> Result<Option<Deidentification>, Problem> {
    let name = string(v, path)?;
    let spelled = name.to_ascii_lowercase().replace('_', "-");
    if spelled.is_empty() || spelled == "deidentification-unspecified" {
        return Ok(None);
    }
    Deidentification::parse(&spelled).map(Some).ok_or_else(|| {
        problem(format!(
            "`{path}`: unknown de-identification `{name}`; one of IDENTIFIED, PSEUDONYMIZED, UNLINKED_PSEUDONYMIZED, ANONYMIZED, AGGREGATED"
        ))
    })
}

pub(super) fn group_size(v: &Value, path: &str) -> Result<Option<u64>, Problem> {
    let k = match v {
        Value::Number(n) => n.as_u64(),
        // Protobuf JSON writes 64-bit integers as strings.
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => None,
    };
    match k {
        Some(k) => Ok(Some(k).filter(|&k| k > 0)),
        None => Err(problem(format!(
            "`{path}` must be a whole number of individuals, not {}",
            kind(v)
        ))),
    }
}
