//! A batch's decisions in a few lines, not a line per item, so what a
//! caller makes the log write stays a small multiple of what it sent.
//!
//! An AuthZEN `evaluations` request names its shared defaults once and
//! each item only what differs; written one line per item, the defaults
//! were copied into every line (11 MB of requests made 598 MB of log). A
//! batch is written instead as lines of this shape (at most 48 KiB of
//! tables each, so a line stays far under the 64 KiB every line keeps):
//!
//! ```text
//! {"time":…,"via":"authzen.evaluations","revision":…,"latency_us":…,
//!  "batch":{"items":3,"first":0,"of":3,
//!           "shared":{"subject":"alice","category":"customer-data",…},
//!           "varying":["purpose","decision"],
//!           "values":[["provide","marketing"],["PERMIT","DENY"]],
//!           "kinds":[[0,0],[1,1]],
//!           "order":[0,1,0]}}
//! ```
//!
//! Item `first + i` is the decision line `shared` plus, for each
//! `varying[j]`, `values[j][kinds[order[i]][j]]` (a `null` value: the
//! member is absent). Every distinct value is written once however many
//! items use it, every distinct item once however often it repeats.
//!
//! `first` and `of` are written only when a batch takes several lines;
//! `varying`, `values` and `kinds` only when items differ, `order` only
//! when there is more than one kind (else every item is kind 0).
//!
//! A request's lines, seals included, stay within
//! [`BATCH_LOG_BYTES_PER_REQUEST_BYTE`] times its body: past that the
//! reasons are left out, then the rule ids (both derived from the
//! question, which `replay` asks again; the line says `left_out`). Past
//! that (only hashed fields, `--decision-log-redact`, take a batch there)
//! the smallest form is written still: a batch's questions are never left
//! out whole.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::{Map, Value};

use super::DecisionLog;
use super::line::{LEFT_OUT_IN_TURN, Record, Redaction, Via};
use crate::engine::{Decision, DecisionRequest, Evaluation};

/// At most this many bytes of log, seals included, for each byte of a
/// batch's request body, as for a single evaluation.
pub const BATCH_LOG_BYTES_PER_REQUEST_BYTE: usize = super::line::LOG_BYTES_PER_REQUEST_BYTE;
/// A batch line stops taking items before its tables pass this many bytes…
const CHUNK_BYTES: usize = 48 * 1024;
/// …and is split if, written, it passes this (under the 64 KiB at which
/// the writer cuts a line, with room for its `seq` and seal).
const MAX_BATCH_LINE: usize = super::bound::MAX_LINE_BYTES - 1024;
/// What the writer adds to a line: `seq` and the seal.
const SEAL_BYTES: usize = super::chain::SEAL_BYTES + 24;
/// A value index meaning "this item lacks the member".
const ABSENT: u32 = u32::MAX;

/// One member's distinct values, as JSON text, in first-seen order.
#[derive(Debug, Default)]
struct Table {
    values: Vec<String>,
    index: HashMap<String, u32>,
}

impl Table {
    fn index_of(&mut self, value: &Value) -> Option<u32> {
        let text = serde_json::to_string(value).ok()?;
        if let Some(&i) = self.index.get(&text) {
            return Some(i);
        }
        let i = u32::try_from(self.values.len()).ok()?;
        self.values.push(text.clone());
        self.index.insert(text, i);
        Some(i)
    }
}

/// A batch's lines as the writer takes them: complete JSON objects but
/// for their `seq` and seal.
#[derive(Debug)]
pub struct Lines {
    pub lines: Vec<Vec<u8>>,
    pub denied: u64,
}

impl Lines {
    pub fn bytes(&self) -> usize {
        self.lines.iter().map(Vec::len).sum()
    }
}

/// A batch being decided: each item's decision added as it is made, the
/// lines queued by [`Batch::finish`].
#[derive(Debug)]
pub struct Batch {
    log: DecisionLog,
    redaction: Option<Arc<Redaction>>,
    face: &'static str,
    time: SystemTime,
    started: Instant,
    request_bytes: usize,
    revision: Option<Arc<str>>,
    keys: Vec<String>,
    tables: Vec<Table>,
    kinds: Vec<Vec<u32>>,
    kind_index: HashMap<Vec<u32>, u32>,
    order: Vec<u32>,
    denied: u64,
}

impl DecisionLog {
    /// A batch of `face` answering a request of `request_bytes` bytes.
    pub fn batch(&self, face: &'static str, request_bytes: usize) -> Batch {
        Batch {
            log: self.clone(),
            redaction: self.shared.as_ref().map(|s| s.redaction.clone()),
            face,
            time: SystemTime::now(),
            started: Instant::now(),
            request_bytes,
            revision: None,
            keys: Vec::new(),
            tables: Vec::new(),
            kinds: Vec::new(),
            kind_index: HashMap::new(),
            order: Vec::new(),
            denied: 0,
        }
    }
}

impl Batch {
    /// Adds an item's decision (nothing when the log is off).
    pub fn add(&mut self, via: Via, request: DecisionRequest, answer: &Evaluation, reason: String) {
        let Some(redaction) = &self.redaction else {
            return;
        };
        let record = Record {
            decision: answer.decision,
            rule_ids: answer.rule_ids.clone(),
            reason,
            monitor_decision: answer.monitor.as_ref().map(|m| m.decision),
            choices: answer.choices.clone(),
            ..Record::new(via, request, answer.policy_revision.clone(), 0)
        };
        self.revision
            .get_or_insert_with(|| answer.policy_revision.clone());
        self.denied += record.denied();
        let Ok(Value::Object(members)) = record.item_members(redaction) else {
            // Not writable (it cannot happen with string members): counted
            // as dropped with the rest if the batch is.
            return;
        };
        let mut kind = vec![ABSENT; self.keys.len()];
        for (key, value) in members {
            let j = match self.keys.iter().position(|k| *k == key) {
                Some(j) => j,
                None => {
                    self.keys.push(key);
                    self.tables.push(Table::default());
                    kind.push(ABSENT);
                    self.keys.len() - 1
                }
            };
            let index = self.tables.get_mut(j).and_then(|t| t.index_of(&value));
            if let (Some(i), Some(slot)) = (index, kind.get_mut(j)) {
                *slot = i;
            }
        }
        while kind.last() == Some(&ABSENT) {
            kind.pop();
        }
        let next = u32::try_from(self.kinds.len()).unwrap_or(u32::MAX);
        let k = *self.kind_index.entry(kind.clone()).or_insert(next);
        if k == next {
            self.kinds.push(kind);
        }
        self.order.push(k);
    }

    /// Queues the batch's lines: within the request's budget, with the
    /// reasons and then the rule ids left out if need be, or counted as
    /// dropped past that.
    pub fn finish(self) {
        if self.redaction.is_none() || self.order.is_empty() {
            return;
        }
        let latency_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let budget = self
            .request_bytes
            .saturating_mul(BATCH_LOG_BYTES_PER_REQUEST_BYTE);
        let mut lines = Vec::new();
        for left_out in LEFT_OUT_IN_TURN {
            lines = self.render(left_out, latency_us);
            let total: usize = lines.iter().map(|l| l.len() + SEAL_BYTES).sum();
            if total <= budget {
                break;
            }
        }
        // Past every cut the smallest form is written still (hashed
        // fields, `--decision-log-redact`, are what can take a batch
        // there): a batch's questions are never left out whole.
        let mut record = Record::new(
            Via::face(self.face),
            DecisionRequest::default(),
            self.revision.clone().unwrap_or_else(|| Arc::from("")),
            latency_us,
        );
        record.time = self.time;
        record.count = self.order.len() as u64;
        // Queued with the denials (kept first when the queue is full) only
        // when mostly denials: a batch of permits with one denial in it
        // does not displace other callers' lines.
        record.decision = if self.denied * 2 >= record.count {
            Decision::Deny
        } else {
            Decision::Permit
        };
        record.batch = Some(Box::new(Lines {
            lines,
            denied: self.denied,
        }));
        self.log.queue(record);
    }

    /// The batch's lines, each at most [`MAX_BATCH_LINE`] bytes but for a
    /// single item over it (which the writer then cuts, like any line
    /// over 64 KiB).
    fn render(&self, left_out: &[&str], latency_us: u64) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut from = 0;
        while from < self.order.len() {
            let to = self.chunk_end(from);
            self.lines_of(from, to, left_out, latency_us, &mut lines);
            from = to;
        }
        lines
    }

    /// Items `from..to` as one line, or halved until each line fits.
    fn lines_of(
        &self,
        from: usize,
        to: usize,
        left_out: &[&str],
        latency_us: u64,
        out: &mut Vec<Vec<u8>>,
    ) {
        let line = self.line(from, to, left_out, latency_us);
        if line.len() <= MAX_BATCH_LINE || to - from < 2 {
            out.push(line.into_bytes());
            return;
        }
        let middle = from + (to - from) / 2;
        self.lines_of(from, middle, left_out, latency_us, out);
        self.lines_of(middle, to, left_out, latency_us, out);
    }

    /// Where a line that begins at item `from` ends: before the item that
    /// would take its tables past [`CHUNK_BYTES`] (at least one item in).
    /// An estimate from above, each index taken at 6 bytes; `lines_of`
    /// halves a line that passes [`MAX_BATCH_LINE`] all the same.
    fn chunk_end(&self, from: usize) -> usize {
        let mut kinds = std::collections::HashSet::new();
        let mut values = std::collections::HashSet::new();
        let mut bytes = 0usize;
        for (i, &k) in self.order.iter().enumerate().skip(from) {
            let mut cost = 6;
            if !kinds.contains(&k) {
                let kind = self.kinds.get(k as usize).map_or(&[][..], Vec::as_slice);
                cost += self.keys.len() * 6 + 2;
                for (j, &v) in kind.iter().enumerate() {
                    if v != ABSENT && !values.contains(&(j, v)) {
                        cost += self.value(j, v).len() + 1;
                    }
                }
            }
            if bytes + cost > CHUNK_BYTES && i > from {
                return i;
            }
            bytes += cost;
            if kinds.insert(k) {
                if let Some(kind) = self.kinds.get(k as usize) {
                    for (j, &v) in kind.iter().enumerate() {
                        if v != ABSENT {
                            values.insert((j, v));
                        }
                    }
                }
            }
        }
        self.order.len()
    }

    fn key(&self, j: usize) -> &str {
        self.keys.get(j).map_or("", String::as_str)
    }

    /// Member `j`'s value `v` as JSON (`null`: absent).
    fn value(&self, j: usize, v: u32) -> &str {
        self.tables
            .get(j)
            .and_then(|t| t.values.get(v as usize))
            .map_or("null", String::as_str)
    }

    /// The line of items `from..to`.
    fn line(&self, from: usize, to: usize, left_out: &[&str], latency_us: u64) -> String {
        let order = self.order.get(from..to).unwrap_or_default();
        // The kinds these items use, renumbered in first-seen order.
        let mut kind_local: HashMap<u32, u32> = HashMap::new();
        let mut kinds: Vec<&[u32]> = Vec::new();
        for &k in order {
            kind_local.entry(k).or_insert_with(|| {
                kinds.push(self.kinds.get(k as usize).map_or(&[], Vec::as_slice));
                (kinds.len() - 1) as u32
            });
        }
        let mut shared = Vec::new();
        // Per varying member: its index, its values renumbered, and each
        // kind's value.
        let mut varying: Vec<(usize, Vec<u32>, Vec<u32>)> = Vec::new();
        for (j, key) in self.keys.iter().enumerate() {
            if left_out.contains(&key.as_str()) {
                continue;
            }
            let of = |kind: &[u32]| kind.get(j).copied().unwrap_or(ABSENT);
            let mut used: Vec<u32> = Vec::new();
            let mut per_kind = Vec::with_capacity(kinds.len());
            for kind in &kinds {
                let v = of(kind);
                let local = match used.iter().position(|&u| u == v) {
                    Some(p) => p,
                    None => {
                        used.push(v);
                        used.len() - 1
                    }
                };
                per_kind.push(local as u32);
            }
            match used.as_slice() {
                [ABSENT] => {}
                [v] => shared.push((j, *v)),
                _ => varying.push((j, used, per_kind)),
            }
        }
        let mut out = String::with_capacity(256);
        let _ = write!(
            out,
            "{{\"time\":\"{}\",\"via\":{},\"revision\":{},\"latency_us\":{latency_us},\"batch\":{{\"items\":{}",
            super::rfc3339(self.time),
            json(self.face),
            json(self.revision.as_deref().unwrap_or("")),
            to - from,
        );
        if to - from < self.order.len() {
            let _ = write!(out, ",\"first\":{from},\"of\":{}", self.order.len());
        }
        out.push_str(",\"shared\":{");
        for (n, &(j, v)) in shared.iter().enumerate() {
            sep(&mut out, n);
            let _ = write!(out, "{}:{}", json(self.key(j)), self.value(j, v));
        }
        out.push('}');
        if !varying.is_empty() {
            out.push_str(",\"varying\":[");
            for (n, &(j, _, _)) in varying.iter().enumerate() {
                sep(&mut out, n);
                out.push_str(&json(self.key(j)));
            }
            out.push_str("],\"values\":[");
            for (n, (j, used, _)) in varying.iter().enumerate() {
                sep(&mut out, n);
                out.push('[');
                for (m, &v) in used.iter().enumerate() {
                    sep(&mut out, m);
                    out.push_str(self.value(*j, v));
                }
                out.push(']');
            }
            out.push_str("],\"kinds\":[");
            for (k, _) in kinds.iter().enumerate() {
                sep(&mut out, k);
                out.push('[');
                for (n, (_, _, per_kind)) in varying.iter().enumerate() {
                    sep(&mut out, n);
                    let _ = write!(out, "{}", per_kind.get(k).copied().unwrap_or(0));
                }
                out.push(']');
            }
            out.push(']');
        }
        if kinds.len() > 1 {
            out.push_str(",\"order\":[");
            for (n, k) in order.iter().enumerate() {
                sep(&mut out, n);
                let _ = write!(out, "{}", kind_local.get(k).copied().unwrap_or(0));
            }
            out.push(']');
        }
        out.push('}');
        if !left_out.is_empty() {
            let _ = write!(out, ",\"left_out\":{}", json(left_out));
        }
        if let Some(redaction) = self.redaction.as_deref().filter(|r| !r.is_empty()) {
            let _ = write!(out, ",\"redacted\":{}", json(&redaction.described()));
        }
        out.push('}');
        out
    }
}

fn json(value: &(impl serde::Serialize + ?Sized)) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

fn sep(out: &mut String, n: usize) {
    if n > 0 {
        out.push(',');
    }
}

/// A batch line read back as the decision lines it stands for, one per
/// distinct item, each with its `count` (and the line's `via`,
/// `revision` and `redacted`).
pub fn expand(line: &Map<String, Value>) -> Result<Vec<Map<String, Value>>, String> {
    let bad = |what: &str| format!("a batch line the writer did not write ({what})");
    let batch = line
        .get("batch")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("`batch` is not an object"))?;
    // A member left out is empty (`order`: every item kind 0).
    let empty = Vec::new();
    let list = |key: &str| match batch.get(key) {
        None => Ok(&empty),
        Some(v) => v
            .as_array()
            .ok_or_else(|| bad(&format!("`batch.{key}` is not a list"))),
    };
    let shared = batch
        .get("shared")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("`batch.shared` is not an object"))?;
    let varying = list("varying")?
        .iter()
        .map(Value::as_str)
        .collect::<Option<Vec<&str>>>()
        .ok_or_else(|| bad("`batch.varying` is not a list of names"))?;
    let values = list("values")?
        .iter()
        .map(Value::as_array)
        .collect::<Option<Vec<_>>>()
        .filter(|v| v.len() == varying.len())
        .ok_or_else(|| bad("`batch.values` is not a list per varying member"))?;
    let mut kinds = list("kinds")?
        .iter()
        .map(|kind| {
            let kind = kind.as_array().filter(|k| k.len() == varying.len())?;
            kind.iter()
                .zip(&values)
                .map(|(i, values)| {
                    let i = usize::try_from(i.as_u64()?).ok()?;
                    values.get(i)
                })
                .collect::<Option<Vec<&Value>>>()
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("a kind in `batch.kinds` names a value `batch.values` lacks"))?;
    if kinds.is_empty() && varying.is_empty() {
        kinds.push(Vec::new());
    }
    let items = batch
        .get("items")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("`batch.items` is not a count"))?;
    let mut counts = vec![0u64; kinds.len()];
    match batch.get("order") {
        None if kinds.len() == 1 => counts = vec![items],
        None => return Err(bad("`batch.order` is missing for several kinds")),
        Some(_) => {
            for k in list("order")? {
                let k = k
                    .as_u64()
                    .and_then(|k| usize::try_from(k).ok())
                    .filter(|&k| k < kinds.len())
                    .ok_or_else(|| bad("`batch.order` names a kind `batch.kinds` lacks"))?;
                if let Some(count) = counts.get_mut(k) {
                    *count += 1;
                }
            }
        }
    }
    if items != counts.iter().sum::<u64>() {
        return Err(bad("`batch.items` is not the length of `batch.order`"));
    }
    let mut out = Vec::with_capacity(kinds.len());
    for (kind, count) in kinds.iter().zip(counts) {
        if count == 0 {
            continue;
        }
        let mut item = shared.clone();
        for (key, value) in varying.iter().zip(kind) {
            if !value.is_null() {
                item.insert((*key).to_string(), (*value).clone());
            }
        }
        for key in ["via", "revision", "redacted"] {
            if let Some(value) = line.get(key) {
                item.insert(key.to_string(), value.clone());
            }
        }
        item.insert("count".into(), count.into());
        out.push(item);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
