//! A question to the cache: every field a decision depends on, written
//! canonically into bytes. Two requests are the same question exactly when
//! their bytes are equal: every string and list carries its length, and
//! maps are written in key order. `action` and `request_id` are left out:
//! the policy does not decide on them.
//!
//! Written into a reused buffer, so a cache hit allocates nothing.

use std::cell::RefCell;
use std::collections::HashMap;

use purposegate_proto::v1 as pb;

thread_local! {
    /// Each thread's buffer for the question being looked up.
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with `req` written as a question, in this thread's buffer.
pub fn with_question<T>(req: &pb::CheckRequest, f: impl FnOnce(&[u8]) -> T) -> T {
    BUFFER.with(|buffer| match buffer.try_borrow_mut() {
        Ok(mut buffer) => {
            buffer.clear();
            write(req, &mut buffer);
            let answer = f(&buffer);
            // A thread that once wrote a huge question does not keep the
            // memory for ever.
            if buffer.capacity() > KEPT_CAPACITY {
                *buffer = Vec::new();
            }
            answer
        }
        // Only if `f` itself asks a question: a buffer of its own.
        Err(_) => {
            let mut own = Vec::new();
            write(req, &mut own);
            f(&own)
        }
    })
}

/// The largest buffer a thread keeps between questions.
const KEPT_CAPACITY: usize = 16 * 1024;

/// Writes `req` as a question into `out`.
pub fn write(req: &pb::CheckRequest, out: &mut Vec<u8>) {
    text(out, &req.purpose);
    match &req.subject {
        Some(s) => {
            text(out, &s.id);
            text(out, &s.tenant);
            list(out, &s.roles);
        }
        None => {
            text(out, "");
            text(out, "");
            list(out, &[]);
        }
    }
    match &req.resource {
        Some(r) => {
            text(out, &r.category);
            text(out, &r.owner_tenant);
            text(out, &r.data_subject);
            number(out, u64::from(r.deidentification.cast_unsigned()));
            number(out, r.group_size);
            list(out, &r.origin);
            map(out, &r.attributes);
        }
        None => {
            text(out, "");
            text(out, "");
            text(out, "");
            number(out, 0);
            number(out, 0);
            list(out, &[]);
            map(out, &HashMap::new());
        }
    }
    match &req.context {
        Some(c) => {
            text(out, &c.customer_instruction);
            map(out, &c.attributes);
        }
        None => {
            text(out, "");
            map(out, &HashMap::new());
        }
    }
    list(out, &req.supported_obligations);
    // A permit asked with a purpose context carries a token; one asked
    // without does not: they are different answers.
    number(out, u64::from(req.issue_purpose_context));
    text(out, &req.inherited_purpose);
}

/// A number as LEB128: seven bits a byte, the high bit set on all but the
/// last.
fn number(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

fn text(out: &mut Vec<u8>, s: &str) {
    number(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn list(out: &mut Vec<u8>, items: &[String]) {
    number(out, items.len() as u64);
    for item in items {
        text(out, item);
    }
}

/// A map in key order, without sorting into a new allocation: each round
/// writes the smallest key above the last one written. Maps are small (the
/// request limits bound them), so the rounds cost less than an allocation.
fn map(out: &mut Vec<u8>, m: &HashMap<String, String>) {
    number(out, m.len() as u64);
    let mut last: Option<&str> = None;
    for _ in 0..m.len() {
        let next = m
            .iter()
            .filter(|(k, _)| last.is_none_or(|l| k.as_str() > l))
            .min_by(|a, b| a.0.cmp(b.0));
        if let Some((k, v)) = next {
            text(out, k);
            text(out, v);
            last = Some(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question(req: &pb::CheckRequest) -> Vec<u8> {
        let mut out = Vec::new();
        write(req, &mut out);
        out
    }

    fn with_attributes(pairs: &[(&str, &str)]) -> pb::CheckRequest {
        pb::CheckRequest {
            purpose: "provide".into(),
            resource: Some(pb::Resource {
                category: "customer-data".into(),
                attributes: pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_map_is_the_same_question_whatever_its_order() {
        let pairs: Vec<(String, String)> = (0..20)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let forward: Vec<_> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let backward: Vec<_> = forward.iter().rev().copied().collect();
        assert_eq!(
            question(&with_attributes(&forward)),
            question(&with_attributes(&backward))
        );
    }

    #[test]
    fn questions_that_differ_anywhere_are_different() {
        let base = with_attributes(&[("a", "bc")]);
        let mut variants = vec![
            with_attributes(&[("ab", "c")]),
            with_attributes(&[("a", "bc"), ("", "")]),
            with_attributes(&[]),
        ];
        let mut v = base.clone();
        v.purpose = "provid".into();
        v.subject = Some(pb::Subject {
            id: "e".into(),
            ..Default::default()
        });
        variants.push(v);
        let mut v = base.clone();
        v.subject = Some(pb::Subject {
            roles: vec![String::new()],
            ..Default::default()
        });
        variants.push(v);
        let mut v = base.clone();
        v.supported_obligations = vec!["notify".into()];
        variants.push(v);
        let mut v = base.clone();
        if let Some(r) = v.resource.as_mut() {
            r.group_size = 300;
        }
        variants.push(v);
        let mut v = base.clone();
        if let Some(r) = v.resource.as_mut() {
            r.origin = vec!["bc".into()];
        }
        variants.push(v);
        let mut v = base.clone();
        v.context = Some(pb::Context {
            customer_instruction: "a".into(),
            ..Default::default()
        });
        variants.push(v);
        // Neither the action nor the request id is part of the question.
        let mut same = base.clone();
        same.action = "GetCustomer".into();
        same.request_id = "r-1".into();
        assert_eq!(question(&same), question(&base));
        let mut seen = std::collections::HashSet::new();
        assert!(seen.insert(question(&base)));
        for v in &variants {
            assert!(
                seen.insert(question(v)),
                "{v:?} is read as another question"
            );
        }
        // Absent parts are the same question as empty ones.
        let absent = pb::CheckRequest::default();
        let empty = pb::CheckRequest {
            subject: Some(pb::Subject::default()),
            resource: Some(pb::Resource::default()),
            context: Some(pb::Context::default()),
            ..Default::default()
        };
        assert_eq!(question(&absent), question(&empty));
    }

    #[test]
    fn numbers_are_written_in_as_few_bytes_as_they_need() {
        for (n, bytes) in [(0u64, 1usize), (127, 1), (128, 2), (u64::MAX, 10)] {
            let mut out = Vec::new();
            number(&mut out, n);
            assert_eq!(out.len(), bytes, "{n}");
        }
    }
}
