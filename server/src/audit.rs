//! The decision log: every decision as one JSON line, written off the
//! request path.
//!
//! A check hands its record to a bounded queue with `try_send` and moves
//! on; one writer task serialises and writes. A full queue drops the record
//! and counts it; a failing write is counted and logged. Neither ever slows
//! or fails a check.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
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

/// One decision, as logged.
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
    origin: Vec<String>,
    owner_tenant: String,
    decision: Decision,
    rule_ids: Vec<Arc<str>>,
    reason: String,
    revision: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    monitor_decision: Option<Decision>,
    latency_us: u64,
}

/// The request-path side of the log: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    queue: Option<mpsc::Sender<Record>>,
    /// Records dropped because the queue was full.
    dropped: Counter,
}

impl DecisionLog {
    /// A log that records nothing.
    pub fn off() -> Self {
        DecisionLog {
            queue: None,
            dropped: Counter::default(),
        }
    }

    /// Opens the target and starts the writer task (inside a runtime).
    /// `dropped` counts records a full queue turned away, `write_errors`
    /// records that could not be written.
    pub async fn start(
        target: Target,
        capacity: usize,
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
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(write_loop(rx, BufWriter::new(writer), write_errors));
        Ok(DecisionLog {
            queue: Some(tx),
            dropped,
        })
    }

    /// Queues a decision; drops (and counts) it if the queue is full.
    pub fn record(&self, request: DecisionRequest, answer: &Evaluation, latency: Duration) {
        let Some(queue) = &self.queue else { return };
        let record = Record {
            time: SystemTime::now(),
            request_id: request.request_id,
            subject: request.subject.id,
            tenant: request.subject.tenant,
            purpose: request.purpose,
            action: request.action,
            category: request.resource.category,
            origin: request.resource.origin,
            owner_tenant: request.resource.owner_tenant,
            decision: answer.decision,
            rule_ids: answer.rule_ids.clone(),
            reason: answer.reason.clone(),
            revision: answer.policy_revision.clone(),
            monitor_decision: answer.monitor.as_ref().map(|m| m.decision),
            latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        };
        if queue.try_send(record).is_err() {
            self.dropped.inc();
        }
    }
}

async fn write_loop(
    mut rx: mpsc::Receiver<Record>,
    mut out: BufWriter<Box<dyn AsyncWrite + Send + Unpin>>,
    write_errors: Counter,
) {
    while let Some(record) = rx.recv().await {
        let mut line = match serde_json::to_vec(&record) {
            Ok(l) => l,
            Err(_) => {
                write_errors.inc();
                continue;
            }
        };
        line.push(b'\n');
        let mut result = out.write_all(&line).await;
        // Flush when the queue is empty, so lines appear promptly without a
        // write per record under load.
        if result.is_ok() && rx.is_empty() {
            result = out.flush().await;
        }
        if let Err(e) = result {
            let n = write_errors.inc();
            if n.is_power_of_two() || n == 0 {
                warn!(error = %e, failures = n + 1, "cannot write the decision log");
            }
        }
    }
    let _ = out.flush().await;
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

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_940_102) + Duration::from_micros(5);
        assert_eq!(rfc3339(t), "2026-11-29T08:15:02.000005Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }
}
