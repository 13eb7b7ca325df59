//! The decision log: every decision as one JSON line, written off the
//! request path.
//!
//! A check hands its record to a queue bounded in bytes and moves on; one
//! writer task serialises and writes. The queue never waits and never
//! grows past its budget, and it loses nothing silently:
//!
//! - once the queue is half full, a decision identical to the one queued
//!   just before it (same subject, question and answer) is folded into it:
//!   one line with `count` and `last_time`, so a flood of the same call
//!   costs one line (below that, every decision has its own line);
//! - denials and permits wait in separate queues: when the budget is
//!   spent, a denial takes the place of the oldest permit, so a flood of
//!   permitted noise cannot push out the denial an insider wants hidden;
//! - what still does not fit is dropped, counted
//!   (`purposegate_decision_log_dropped_total`) and written as a line of
//!   its own, `{"dropped": N, "denied_dropped": D, "from": …, "to": …}`,
//!   before the decisions that follow it.
//!
//! A failing write is counted and logged. Nothing here ever slows or fails
//! a check.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::Notify;
use tracing::warn;

use crate::engine::{Decision, DecisionRequest, Evaluation};

/// Where decision lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
    Off,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" => Err("give `-` (stdout), `off`, or a file path".to_string()),
            "-" | "stdout" => Ok(Target::Stdout),
            "off" | "none" => Ok(Target::Off),
            path => Ok(Target::File(PathBuf::from(path))),
        }
    }
}

/// One decision (or a run of identical ones), as logged.
#[derive(Debug, Serialize)]
struct Record {
    /// Taken when the decision is made, written out as RFC 3339 by the
    /// writer, off the request path.
    #[serde(serialize_with = "as_rfc3339")]
    time: SystemTime,
    request_id: String,
    subject: String,
    tenant: String,
    purpose: String,
    action: String,
    category: String,
    /// The resource attribute `id` (AuthZEN's `resource.id`), if given.
    #[serde(skip_serializing_if = "String::is_empty")]
    resource_id: String,
    origin: Vec<String>,
    owner_tenant: String,
    decision: Decision,
    rule_ids: Vec<Arc<str>>,
    reason: String,
    revision: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    monitor_decision: Option<Decision>,
    latency_us: u64,
    /// Identical decisions folded into this line (absent when 1).
    #[serde(skip_serializing_if = "is_one")]
    count: u64,
    /// When the last of them was made.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "as_optional_rfc3339"
    )]
    last_time: Option<SystemTime>,
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

impl Record {
    /// Whether `other` is the same decision again: all but its time,
    /// request id and latency.
    fn same_decision(&self, other: &Record) -> bool {
        self.decision == other.decision
            && self.subject == other.subject
            && self.purpose == other.purpose
            && self.category == other.category
            && self.resource_id == other.resource_id
            && self.tenant == other.tenant
            && self.owner_tenant == other.owner_tenant
            && self.action == other.action
            && self.origin == other.origin
            && self.revision == other.revision
            && self.rule_ids == other.rule_ids
            && self.reason == other.reason
            && self.monitor_decision == other.monitor_decision
    }

    /// What the record takes in the queue.
    fn bytes(&self) -> usize {
        RECORD_OVERHEAD
            + self.request_id.len()
            + self.subject.len()
            + self.tenant.len()
            + self.purpose.len()
            + self.action.len()
            + self.category.len()
            + self.resource_id.len()
            + self.origin.iter().map(|o| o.len() + 24).sum::<usize>()
            + self.owner_tenant.len()
            + self.rule_ids.len() * 16
            + self.reason.len()
    }
}

/// A record's fixed cost: its struct and the queue's slot.
const RECORD_OVERHEAD: usize = 320;

/// Decisions dropped since the last line said so.
#[derive(Debug, Serialize)]
struct Dropped {
    dropped: u64,
    denied_dropped: u64,
    #[serde(serialize_with = "as_rfc3339")]
    from: SystemTime,
    #[serde(serialize_with = "as_rfc3339")]
    to: SystemTime,
}

#[derive(Debug, Default)]
struct Queue {
    denials: VecDeque<Record>,
    permits: VecDeque<Record>,
    bytes: usize,
    dropped: Option<Dropped>,
}

impl Queue {
    fn note_dropped(&mut self, record: &Record) {
        let denied = u64::from(record.decision != Decision::Permit);
        let last = record.last_time.unwrap_or(record.time);
        match &mut self.dropped {
            Some(d) => {
                d.dropped += record.count;
                d.denied_dropped += denied * record.count;
                d.from = d.from.min(record.time);
                d.to = d.to.max(last);
            }
            None => {
                self.dropped = Some(Dropped {
                    dropped: record.count,
                    denied_dropped: denied * record.count,
                    from: record.time,
                    to: last,
                });
            }
        }
    }
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Notify,
    budget: usize,
    /// Decisions dropped.
    dropped: Counter,
}

/// The request-path side of the log: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    shared: Option<Arc<Shared>>,
}

impl DecisionLog {
    /// A log that records nothing.
    pub fn off() -> Self {
        DecisionLog { shared: None }
    }

    /// Opens the target and starts the writer task (inside a runtime).
    /// `budget` is the queue's size in bytes; `dropped` counts decisions
    /// that did not fit, `write_errors` lines that could not be written.
    pub async fn start(
        target: Target,
        budget: usize,
        dropped: Counter,
        write_errors: Counter,
    ) -> std::io::Result<Self> {
        let writer: Box<dyn AsyncWrite + Send + Unpin> = match &target {
            Target::Off => return Ok(Self::off()),
            Target::Stdout => Box::new(tokio::io::stdout()),
            Target::File(path) => Box::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await?,
            ),
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            budget: budget.max(RECORD_OVERHEAD * 4),
            dropped,
        });
        tokio::spawn(write_loop(
            shared.clone(),
            BufWriter::new(writer),
            write_errors,
        ));
        Ok(DecisionLog {
            shared: Some(shared),
        })
    }

    /// Queues a decision (folding, displacing or dropping as the module
    /// says); never waits.
    pub fn record(
        &self,
        request: DecisionRequest,
        answer: &Evaluation,
        reason: String,
        latency: Duration,
    ) {
        let Some(shared) = &self.shared else { return };
        let record = Record {
            time: SystemTime::now(),
            request_id: request.request_id,
            subject: request.subject.id,
            tenant: request.subject.tenant,
            purpose: request.purpose,
            action: request.action,
            category: request.resource.category,
            resource_id: request
                .resource
                .attributes
                .get("id")
                .cloned()
                .unwrap_or_default(),
            origin: request.resource.origin,
            owner_tenant: request.resource.owner_tenant,
            decision: answer.decision,
            rule_ids: answer.rule_ids.clone(),
            reason,
            revision: answer.policy_revision.clone(),
            monitor_decision: answer.monitor.as_ref().map(|m| m.decision),
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            count: 1,
            last_time: None,
        };
        let Ok(mut queue) = shared.queue.lock() else {
            shared.dropped.inc();
            return;
        };
        let denial = record.decision != Decision::Permit;
        let size = record.bytes();
        // Under pressure (the queue half full), a repeat folds into the
        // line before it; otherwise every decision keeps its own line.
        let pressed = queue.bytes + size > shared.budget / 2;
        let own = if denial {
            &mut queue.denials
        } else {
            &mut queue.permits
        };
        if let Some(last) = own.back_mut().filter(|_| pressed) {
            if last.same_decision(&record) {
                last.count += 1;
                last.last_time = Some(record.time);
                return;
            }
        }
        // Denials take the place of the oldest permits.
        while denial && queue.bytes + size > shared.budget {
            let Some(permit) = queue.permits.pop_front() else {
                break;
            };
            queue.bytes -= permit.bytes();
            shared.dropped.inc_by(permit.count);
            queue.note_dropped(&permit);
        }
        if queue.bytes + size > shared.budget {
            shared.dropped.inc();
            queue.note_dropped(&record);
            return;
        }
        queue.bytes += size;
        if denial {
            queue.denials.push_back(record);
        } else {
            queue.permits.push_back(record);
        }
        drop(queue);
        shared.ready.notify_one();
    }
}

/// Takes everything queued: the drop note first, then the decisions in
/// the order they were made.
fn take(shared: &Shared) -> (Option<Dropped>, Vec<Record>) {
    let Ok(mut queue) = shared.queue.lock() else {
        return (None, Vec::new());
    };
    let dropped = queue.dropped.take();
    let denials = std::mem::take(&mut queue.denials);
    let permits = std::mem::take(&mut queue.permits);
    queue.bytes = 0;
    drop(queue);
    let mut merged = Vec::with_capacity(denials.len() + permits.len());
    let (mut d, mut p) = (
        denials.into_iter().peekable(),
        permits.into_iter().peekable(),
    );
    loop {
        let next = match (d.peek(), p.peek()) {
            (Some(a), Some(b)) if a.time <= b.time => d.next(),
            (Some(_), Some(_)) => p.next(),
            (Some(_), None) => d.next(),
            (None, Some(_)) => p.next(),
            (None, None) => break,
        };
        merged.extend(next);
    }
    (dropped, merged)
}

async fn write_loop(
    shared: Arc<Shared>,
    mut out: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    write_errors: Counter,
) {
    loop {
        shared.ready.notified().await;
        let (dropped, records) = take(&shared);
        let mut lines = Vec::with_capacity(records.len() + 1);
        if let Some(dropped) = &dropped {
            lines.push(serde_json::to_vec(dropped));
        }
        lines.extend(records.iter().map(serde_json::to_vec));
        for line in lines {
            let Ok(mut line) = line else {
                write_errors.inc();
                continue;
            };
            line.push(b'\n');
            if let Err(e) = out.write_all(&line).await {
                let n = write_errors.inc();
                if n.is_power_of_two() || n == 0 {
                    warn!(error = %e, failures = n + 1, "cannot write the decision log");
                }
            }
        }
        if let Err(e) = out.flush().await {
            let n = write_errors.inc();
            if n.is_power_of_two() || n == 0 {
                warn!(error = %e, failures = n + 1, "cannot write the decision log");
            }
        }
    }
}

fn as_optional_rfc3339<S: serde::Serializer>(
    time: &Option<SystemTime>,
    out: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(t) => out.serialize_str(&rfc3339(*t)),
        None => out.serialize_none(),
    }
}

fn as_rfc3339<S: serde::Serializer>(time: &SystemTime, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(&rfc3339(*time))
}

/// `2026-11-29T08:15:02.123456Z`
fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log whose queue no writer empties, with a budget of `budget`.
    fn unwritten(budget: usize) -> (DecisionLog, Arc<Shared>) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            budget,
            dropped: Counter::default(),
        });
        (
            DecisionLog {
                shared: Some(shared.clone()),
            },
            shared,
        )
    }

    fn record_one(log: &DecisionLog, subject: &str, decision: Decision) {
        let request = DecisionRequest {
            subject: crate::engine::Subject {
                id: subject.into(),
                ..Default::default()
            },
            purpose: "provide".into(),
            ..Default::default()
        };
        let answer = Evaluation {
            decision,
            rule_ids: Vec::new(),
            reason: crate::engine::Reason::words("because"),
            policy_revision: "r1".into(),
            ttl_seconds: 300,
            obligations: Vec::new(),
            monitor: None,
            request_id: String::new(),
        };
        log.record(request, &answer, "because".into(), Duration::from_micros(5));
    }

    #[test]
    fn identical_decisions_fold_into_one_line_under_pressure() {
        // Unpressed: one line each.
        let (log, shared) = unwritten(1 << 20);
        for _ in 0..3 {
            record_one(&log, "crm", Decision::Permit);
        }
        assert_eq!(take(&shared).1.len(), 3);
        // Half full from the start: folded.
        let (log, shared) = unwritten(RECORD_OVERHEAD * 4);
        for _ in 0..1000 {
            record_one(&log, "crm", Decision::Permit);
        }
        record_one(&log, "billing", Decision::Permit);
        let (dropped, records) = take(&shared);
        assert!(dropped.is_none());
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].count, 1000);
        assert!(records[0].last_time.is_some());
        let line = String::from_utf8(serde_json::to_vec(&records[0]).unwrap()).unwrap();
        assert!(line.contains("\"count\":1000"), "{line}");
        assert!(
            !String::from_utf8(serde_json::to_vec(&records[1]).unwrap())
                .unwrap()
                .contains("count")
        );
    }

    #[test]
    fn a_denial_displaces_permits_and_every_drop_is_told() {
        let (log, shared) = unwritten(20 * RECORD_OVERHEAD);
        for i in 0..1000 {
            record_one(&log, &format!("noise-{i}"), Decision::Permit);
        }
        record_one(&log, "insider", Decision::Deny);
        for i in 0..1000 {
            record_one(&log, &format!("more-{i}"), Decision::Permit);
        }
        let (dropped, records) = take(&shared);
        assert!(
            records
                .iter()
                .any(|r| r.subject == "insider" && r.decision == Decision::Deny),
            "the denial was lost"
        );
        let dropped = dropped.expect("the drops are told");
        assert_eq!(dropped.dropped as usize + records.len(), 2001);
        assert_eq!(dropped.denied_dropped, 0);
        assert_eq!(shared.dropped.get(), dropped.dropped);
        assert!(dropped.from <= dropped.to);
        // In the order the decisions were made.
        assert!(records.windows(2).all(|w| w[0].time <= w[1].time));
    }

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_940_102) + Duration::from_micros(5);
        assert_eq!(rfc3339(t), "2026-11-29T08:15:02.000005Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }
}
