//! The process log's writer: stderr, never on the request path.
//!
//! A request that logs (a denial, say) must not wait for stderr: a stalled
//! reader of the pipe (a log shipper that is behind, a terminal that is
//! paused) would otherwise block the runtime's workers one by one. Lines go
//! into a queue bounded in bytes and one thread writes them out; a line
//! that finds the queue full is dropped and counted
//! (`*_log_lines_dropped_total`).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use prometheus_client::metrics::counter::Counter;

/// Most bytes of log lines waiting for stderr.
const MAX_QUEUED_BYTES: usize = 1024 * 1024;
/// Most lines waiting (each at least a few bytes).
const MAX_QUEUED_LINES: usize = 8192;

#[derive(Debug)]
struct Queue {
    lines: SyncSender<Vec<u8>>,
    bytes: AtomicUsize,
    dropped: Counter,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

fn queue() -> Option<&'static Queue> {
    static STARTED: Mutex<bool> = Mutex::new(false);
    if let Some(queue) = QUEUE.get() {
        return Some(queue);
    }
    let mut started = STARTED.lock().ok()?;
    if !*started {
        let (tx, rx) = std::sync::mpsc::sync_channel(MAX_QUEUED_LINES);
        let queue = Queue {
            lines: tx,
            bytes: AtomicUsize::new(0),
            dropped: Counter::default(),
        };
        if QUEUE.set(queue).is_ok() {
            let spawned = std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || write_out(rx));
            *started = spawned.is_ok();
        }
    }
    QUEUE.get()
}

fn write_out(lines: Receiver<Vec<u8>>) {
    let mut stderr = std::io::stderr();
    while let Ok(line) = lines.recv() {
        let _ = stderr.write_all(&line);
        if let Some(queue) = QUEUE.get() {
            queue.bytes.fetch_sub(line.len(), Ordering::Relaxed);
        }
    }
}

/// The counter of dropped lines, to register as a metric.
pub fn dropped_lines() -> Counter {
    queue().map(|q| q.dropped.clone()).unwrap_or_default()
}

/// Waits (at most `limit`) until every queued line is written: at exit.
pub fn flush(limit: Duration) {
    let Some(queue) = QUEUE.get() else { return };
    let deadline = Instant::now() + limit;
    while queue.bytes.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A writer for `tracing_subscriber` that queues each line.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueuedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueuedStderr {
    type Writer = QueuedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        QueuedStderr
    }
}

impl Write for QueuedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(queue) = queue() else {
            // No writer thread: write directly rather than lose the line.
            return std::io::stderr().write(buf);
        };
        let before = queue.bytes.fetch_add(buf.len(), Ordering::Relaxed);
        if before + buf.len() > MAX_QUEUED_BYTES {
            queue.bytes.fetch_sub(buf.len(), Ordering::Relaxed);
            queue.dropped.inc();
            return Ok(buf.len());
        }
        match queue.lines.try_send(buf.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                queue.bytes.fetch_sub(buf.len(), Ordering::Relaxed);
                queue.dropped.inc();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How a binary writes its own log: text for people, JSON lines for a
/// collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The process log on stderr, as text or JSON lines; `RUST_LOG` filters it.
/// Lines are queued and written by a thread of their own ([`QueuedStderr`]).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(QueuedStderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (in tests) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
