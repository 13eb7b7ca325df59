//! The decision log: every decision as one JSON line, written off the
//! request path, each line sealed into a hash chain.
//!
//! A check hands its record to a queue bounded in bytes and moves on; one
//! writer thread (`writer.rs`) serialises, seals (`chain.rs`) and writes.
//! The queue never waits and never grows past its budget, and it loses
//! nothing silently:
//!
//! - once the queue is half full, a decision identical to the one queued
//!   just before it (same question and answer) is folded into it: one
//!   line with `count` and `last_time`, so a flood of the same call costs
//!   one line (below that, every decision has its own line);
//! - denials and permits wait in separate queues: when the budget is
//!   spent, a denial takes the place of the oldest permit, so a flood of
//!   permitted noise cannot push out the denial an insider wants hidden;
//! - what still does not fit is dropped, counted
//!   (`purposegate_decision_log_dropped_total`) and written as a line of
//!   its own, `{"dropped": N, "denied_dropped": D, "from": …, "to": …}`,
//!   sealed into the chain like any other, before the decisions that
//!   follow it.
//!
//! A line carries the whole question (`line.rs`), so `replay` can ask it
//! again; `--decision-log-redact` drops or hashes fields. A failing write
//! is counted and logged. Nothing here ever slows or fails a check.

pub mod batch;
mod bound;
pub mod chain;
pub mod checkpoint;
pub mod line;
pub mod lines;
mod resume;
pub mod verify;
mod writer;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use crate::engine::{Decision, DecisionRequest, Evaluation, PermittedPurposes};
pub use batch::Batch;
pub use line::Via;
use line::{Record, Redaction};
pub use writer::Options;

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

/// `HOST:PATH`: the host's name and the log's absolute path (`HOST:-`
/// for stdout).
pub fn default_origin(target: &Target) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string());
    let place = match target {
        Target::File(path) => std::path::absolute(path)
            .unwrap_or_else(|_| path.clone())
            .display()
            .to_string(),
        Target::Stdout | Target::Off => "-".to_string(),
    };
    format!("{host}:{place}")
}

/// A record's fixed cost: its struct and the queue's slot.
const RECORD_OVERHEAD: usize = 480;

/// How long the writer waits for lines before it looks at the file and
/// the checkpoint clock again.
const TICK: Duration = Duration::from_secs(1);
/// Once woken, how long the writer lets lines gather before it takes
/// them: under load a batch, one write and no wake-up per call.
const LINGER: Duration = Duration::from_millis(20);

/// Decisions dropped since the last line said so.
#[derive(Debug, Serialize)]
struct Dropped {
    #[serde(serialize_with = "as_rfc3339")]
    time: SystemTime,
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
        let last = record.last_time.unwrap_or(record.time);
        self.note_dropped_run(record.count, record.denied(), record.time, last);
    }

    fn note_dropped_run(&mut self, count: u64, denied: u64, from: SystemTime, to: SystemTime) {
        match &mut self.dropped {
            Some(d) => {
                d.dropped += count;
                d.denied_dropped += denied;
                d.from = d.from.min(from);
                d.to = d.to.max(to);
            }
            None => {
                self.dropped = Some(Dropped {
                    time: SystemTime::now(),
                    dropped: count,
                    denied_dropped: denied,
                    from,
                    to,
                });
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.denials.is_empty() && self.permits.is_empty() && self.dropped.is_none()
    }
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// For batches, which write their lines on the request's own thread.
    redaction: Arc<Redaction>,
    budget: usize,
    /// Decisions dropped.
    dropped: Counter,
    /// Set by `finish`: write what is queued, sign, and stop.
    closing: AtomicBool,
    /// The writer thread's end, for `finish` to wait on.
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
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

    /// Opens the target (continuing its chain) and starts the writer
    /// thread. `budget` is the queue's size in bytes; `dropped` counts
    /// decisions that did not fit, `write_errors` lines that could not be
    /// written.
    pub fn start(
        target: &Target,
        budget: usize,
        options: Options,
        dropped: Counter,
        write_errors: Counter,
    ) -> std::io::Result<Self> {
        let redaction = Arc::new(options.redaction.clone());
        let Some(mut writer) = writer::Writer::open(target, options, write_errors)? else {
            return Ok(Self::off());
        };
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            redaction,
            budget: budget.max(RECORD_OVERHEAD * 4),
            dropped,
            closing: AtomicBool::new(false),
            done: Mutex::new(Some(done_rx)),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || {
                write_loop(&thread_shared, &mut writer);
                let _ = done_tx.send(());
            })?;
        Ok(DecisionLog {
            shared: Some(shared),
        })
    }

    /// Writes what is queued, signs a last checkpoint (with a key) and
    /// stops the writer, waiting at most `within`.
    pub fn finish(&self, within: Duration) {
        let Some(shared) = &self.shared else { return };
        shared.closing.store(true, Ordering::Release);
        shared.ready.notify_one();
        let done = shared.done.lock().ok().and_then(|mut d| d.take());
        if let Some(done) = done {
            let _ = done.recv_timeout(within);
        }
    }

    /// Queues a decision (folding, displacing or dropping as the module
    /// says); never waits. `request_bytes`, when known (not 0), bounds the
    /// line (`line.rs`).
    pub fn record(
        &self,
        via: Via,
        request: DecisionRequest,
        answer: &Evaluation,
        reason: String,
        latency: Duration,
        request_bytes: usize,
    ) {
        if self.shared.is_none() {
            return;
        }
        let latency = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.queue(Record {
            decision: answer.decision,
            rule_ids: answer.rule_ids.clone(),
            reason,
            monitor_decision: answer.monitor.as_ref().map(|m| m.decision),
            choices: answer.choices.clone(),
            request_bytes,
            ..Record::new(via, request, answer.policy_revision.clone(), latency)
        });
    }

    /// Queues the answer to the reverse question: the purposes permitted.
    pub fn record_permitted(
        &self,
        via: Via,
        request: DecisionRequest,
        answer: &PermittedPurposes,
        latency: Duration,
    ) {
        if self.shared.is_none() {
            return;
        }
        let latency = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.queue(Record {
            permitted: Some(answer.purposes.iter().map(|p| p.purpose.clone()).collect()),
            ..Record::new(via, request, answer.policy_revision.clone(), latency)
        });
    }

    /// A `PermittedSubjects` answer: the data subjects listed, in
    /// `permitted` (the line then has no `decision`).
    pub fn record_subjects(
        &self,
        via: Via,
        request: DecisionRequest,
        subjects: &[String],
        revision: Arc<str>,
        latency: Duration,
    ) {
        if self.shared.is_none() {
            return;
        }
        let latency = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.queue(Record {
            permitted: Some(subjects.iter().map(|s| Arc::from(s.as_str())).collect()),
            ..Record::new(via, request, revision, latency)
        });
    }

    fn queue(&self, record: Record) {
        let Some(shared) = &self.shared else { return };
        let Ok(mut queue) = shared.queue.lock() else {
            shared.dropped.inc_by(record.count);
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
            shared.dropped.inc_by(record.count);
            queue.note_dropped(&record);
            return;
        }
        // Only the first record of a batch wakes the writer: it takes
        // everything queued when it runs (a wake-up per call would cost
        // the call a system call).
        let first = queue.denials.is_empty() && queue.permits.is_empty();
        queue.bytes += size;
        if denial {
            queue.denials.push_back(record);
        } else {
            queue.permits.push_back(record);
        }
        drop(queue);
        if first {
            shared.ready.notify_one();
        }
    }
}

/// Takes everything queued: the drop note first, then the decisions in
/// the order they were made.
#[cfg(test)]
fn take(shared: &Shared) -> (Option<Dropped>, Vec<Record>) {
    let Ok(mut queue) = shared.queue.lock() else {
        return (None, Vec::new());
    };
    take_from(&mut queue)
}

fn take_from(queue: &mut Queue) -> (Option<Dropped>, Vec<Record>) {
    let dropped = queue.dropped.take();
    let denials = std::mem::take(&mut queue.denials);
    let permits = std::mem::take(&mut queue.permits);
    queue.bytes = 0;
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

/// The writer thread: waits for lines (at most a tick), writes them,
/// then looks after the file and the checkpoints.
fn write_loop(shared: &Shared, writer: &mut writer::Writer) {
    loop {
        let (dropped, records, closing) = {
            let Ok(mut queue) = shared.queue.lock() else {
                return;
            };
            if queue.is_empty() && !shared.closing.load(Ordering::Acquire) {
                queue = match shared.ready.wait_timeout(queue, TICK) {
                    Ok((queue, _)) => queue,
                    Err(_) => return,
                };
                if !queue.is_empty() && !shared.closing.load(Ordering::Acquire) {
                    drop(queue);
                    std::thread::sleep(LINGER);
                    queue = match shared.queue.lock() {
                        Ok(queue) => queue,
                        Err(_) => return,
                    };
                }
            }
            let (dropped, records) = take_from(&mut queue);
            (dropped, records, shared.closing.load(Ordering::Acquire))
        };
        writer.write(dropped.as_ref(), &records);
        writer.tick(closing);
        if closing {
            let empty = shared.queue.lock().map(|q| q.is_empty()).unwrap_or(true);
            if empty {
                return;
            }
        }
    }
}

fn as_rfc3339<S: serde::Serializer>(time: &SystemTime, out: S) -> Result<S::Ok, S::Error> {
    out.serialize_str(&rfc3339(*time))
}

/// `2026-11-29T08:15:02.123456Z`
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = crate::engine::civil_date(days);
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
    pub(super) fn unwritten(budget: usize) -> (DecisionLog, Arc<Shared>) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            redaction: Arc::default(),
            budget,
            dropped: Counter::default(),
            closing: AtomicBool::new(false),
            done: Mutex::new(None),
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
            watched_ttl_seconds: 0,
            obligations: Vec::new(),
            monitor: None,
            request_id: String::new(),
            choices: None,
        };
        log.record(
            Via::face("test"),
            request,
            &answer,
            "because".into(),
            Duration::from_micros(5),
            0,
        );
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
        let line =
            String::from_utf8(records[0].to_json(&line::Redaction::default()).unwrap()).unwrap();
        assert!(line.contains("\"count\":1000"), "{line}");
        assert!(
            !String::from_utf8(records[1].to_json(&line::Redaction::default()).unwrap())
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
                .any(|r| r.request.subject.id == "insider" && r.decision == Decision::Deny),
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
