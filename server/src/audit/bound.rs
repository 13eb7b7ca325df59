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
    for value in map.values_mut() {
        cut(value, 0);
    }
    let truncated = serde_json::json!({ "bytes": whole, "sha256": digest });
    map.insert("truncated".into(), truncated.clone());
    match serde_json::to_vec(&map) {
        Ok(line) if line.len() <= MAX_LINE_BYTES => line,
        // Cut values still too many: the answer and the digest remain.
        _ => {
            let mut kept = Map::new();
            for key in ["time", "decision", "rule_ids", "revision", "latency_us"] {
                if let Some(v) = map.remove(key) {
                    kept.insert(key.into(), v);
                }
            }
            kept.insert("truncated".into(), truncated);
            serde_json::to_vec(&kept).unwrap_or_default()
        }
    }
}

fn cut(value: &mut Value, depth: usize) {
    match value {
        Value::String(s) if s.len() > KEEP_STRING => {
            let mut end = KEEP_STRING;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push('…');
        }
        Value::Array(items) => {
            items.truncate(KEEP_ENTRIES);
            items.iter_mut().for_each(|v| cut(v, depth + 1));
        }
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().skip(KEEP_ENTRIES).cloned().collect();
            for key in keys {
                map.remove(&key);
            }
            let long: Vec<String> = map
                .keys()
                .filter(|k| k.len() > KEEP_STRING)
                .cloned()
                .collect();
            for key in long {
                map.remove(&key);
            }
            if depth > 4 {
                map.clear();
            }
            map.values_mut().for_each(|v| cut(v, depth + 1));
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
}
