//! Lines bounded in bytes: a decision whose line would pass
//! [`MAX_LINE_BYTES`] (a request at every field's limit) is written with
//! its long values cut and a digest of the whole line, so every line stays
//! one the log's readers take whole and no request can break the chain.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The longest line the writer writes (before its `seq` and `hash`).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// A string value of a cut line keeps this many bytes…
const KEEP_STRING: usize = 256;
/// …and a list or a map this many entries.
const KEEP_ENTRIES: usize = 16;

/// `object` as it is when it fits; otherwise its values cut, with
/// `"truncated":{"bytes":N,"sha256":"<hex of the whole>"}` added.
pub fn bounded(object: Vec<u8>) -> Vec<u8> {
    if object.len() <= MAX_LINE_BYTES {
        return object;
    }
    let whole = object.len();
    let digest = super::chain::hex(&Sha256::digest(&object));
    let mut map = match serde_json::from_slice::<Value>(&object) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    let truncated = serde_json::json!({ "bytes": whole, "sha256": digest });
    // Cut, then cut harder: every key stays (the line's kind, its count,
    // who asked), only values shrink.
    for (keep_string, keep_entries) in [(KEEP_STRING, KEEP_ENTRIES), (32, 4), (8, 1)] {
        for value in map.values_mut() {
            cut(value, 0, keep_string, keep_entries);
        }
        map.insert("truncated".into(), truncated.clone());
        match serde_json::to_vec(&map) {
            Ok(line) if line.len() <= MAX_LINE_BYTES => return line,
            _ => {}
        }
    }
    // Past every cut (keys of the request's maps are kept up to the
    // entries allowed): the answer's members and the digest.
    let mut kept = Map::new();
    for (key, value) in map {
        if matches!(value, Value::Object(_)) && key != "truncated" {
            continue;
        }
        kept.insert(key, value);
    }
    serde_json::to_vec(&kept).unwrap_or_default()
}

fn cut(value: &mut Value, depth: usize, keep_string: usize, keep_entries: usize) {
    match value {
        Value::String(s) if s.len() > keep_string => {
            let mut end = keep_string;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push('…');
        }
        Value::Array(items) => {
            items.truncate(keep_entries);
            items
                .iter_mut()
                .for_each(|v| cut(v, depth + 1, keep_string, keep_entries));
        }
        Value::Object(map) => {
            let drop: Vec<String> = map
                .keys()
                .enumerate()
                .filter(|(i, k)| *i >= keep_entries || k.len() > keep_string || depth > 4)
                .map(|(_, k)| k.clone())
                .collect();
            for key in drop {
                map.remove(&key);
            }
            map.values_mut()
                .for_each(|v| cut(v, depth + 1, keep_string, keep_entries));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_request_is_written_cut_with_the_digest_of_its_whole() {
        let small = br#"{"decision":"PERMIT","subject":"crm"}"#.to_vec();
        assert_eq!(bounded(small.clone()), small);
        let attributes: Map<String, Value> = (0..500)
            .map(|i| (format!("k{i}"), Value::String("v".repeat(1000))))
            .collect();
        let line = serde_json::json!({
            "time": "t", "subject": "s".repeat(200_000), "decision": "DENY",
            "resource_attributes": attributes,
        });
        let whole = serde_json::to_vec(&line).unwrap();
        let out = bounded(whole.clone());
        assert!(out.len() <= MAX_LINE_BYTES, "{}", out.len());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["decision"], "DENY");
        assert_eq!(v["truncated"]["bytes"], whole.len());
        assert_eq!(
            v["truncated"]["sha256"],
            super::super::chain::hex(&Sha256::digest(&whole))
        );
        assert!(v["subject"].as_str().unwrap().len() < 300);
    }

    #[test]
    fn however_huge_every_key_stays() {
        // Every field at its limit, escaped six bytes a character: the
        // line keeps its kind (`permitted`), its count and who asked.
        let escaped = "\u{1}".repeat(2048);
        let many: Vec<String> = (0..64).map(|i| format!("{i}{escaped}")).collect();
        let map: Map<String, Value> = (0..32)
            .map(|i| {
                (
                    format!("{i}{}", "\u{1}".repeat(200)),
                    Value::String(escaped.clone()),
                )
            })
            .collect();
        let line = serde_json::json!({
            "time": "t", "subject": escaped, "tenant": escaped, "roles": many,
            "purpose": escaped, "category": escaped, "origin": many,
            "resource_attributes": map, "context_attributes": map,
            "supported_obligations": many, "via": "grpc.PermittedPurposes",
            "permitted": many, "revision": "r", "latency_us": 1, "count": 40,
            "last_time": "t2",
        });
        let whole = serde_json::to_vec(&line).unwrap();
        assert!(whole.len() > 10 * MAX_LINE_BYTES);
        let out = bounded(whole);
        assert!(out.len() <= MAX_LINE_BYTES, "{}", out.len());
        let v: Value = serde_json::from_slice(&out).unwrap();
        for key in [
            "permitted",
            "count",
            "last_time",
            "via",
            "purpose",
            "category",
            "truncated",
        ] {
            assert!(v.get(key).is_some(), "{key} lost: {v}");
        }
        assert_eq!(v["count"], 40);
    }
}
