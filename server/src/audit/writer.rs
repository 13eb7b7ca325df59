//! The decision log's writer thread: it seals every line into the hash
//! chain, writes it, rotates the file, and signs checkpoints; none of it
//! on the request path.
//!
//! - Every run of the writer (a segment) begins with an opener:
//!   `"chain":"started"` in a new file, `"continued"` after a restart
//!   (from the writer's own last checkpoint, `resume.rs`), `"rotated"` in
//!   a new file after the one before was moved away or grew past
//!   `--decision-log-max-bytes` (then renamed `FILE.<last seq, 12
//!   digits>`).
//! - With a signing key, a checkpoint line every N lines or S seconds
//!   (even when idle, so a cut-off end shows), before a rotation and, as
//!   the closing checkpoint, at shutdown: it signs the line before it,
//!   the log's origin and where the segment began (`checkpoint.rs`). The
//!   file is synced to disk at every checkpoint.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tracing::{info, warn};

use super::chain::Chain;
use super::checkpoint::{Checkpoint, Draft, How, LeftOut, Opener};
use super::line::{Record, Redaction};
use super::resume::{Own, Resume, resume};
use super::{Dropped, Target};
use crate::signing::Signer;

/// How the decision log is written, beyond where.
#[derive(Debug, Default)]
pub struct Options {
    pub redaction: Redaction,
    /// Rotate the file once it would grow past this many bytes.
    pub max_bytes: Option<u64>,
    /// Keep at most this many files rotated by size; older ones are
    /// deleted (`None`: keep all).
    pub keep: Option<usize>,
    pub signer: Option<Signer>,
    /// A checkpoint after this many lines…
    pub checkpoint_lines: u64,
    /// …or this long after the last one, whichever comes first.
    pub checkpoint_interval: Duration,
    /// The log's identity, signed into every checkpoint.
    pub origin: String,
    /// Sync the file to disk after every batch, not only at checkpoints.
    pub sync_every_batch: bool,
}

enum Sink {
    Stdout(BufWriter<std::io::Stdout>),
    File(LogFile),
}

struct LogFile {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    /// Device and inode, to see the file moved away.
    id: (u64, u64),
    /// A regular file: only those are rotated (not a pipe or a device).
    regular: bool,
}

fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

impl LogFile {
    fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let meta = file.metadata()?;
        Ok(LogFile {
            path: path.to_path_buf(),
            size: meta.len(),
            id: file_id(&meta),
            regular: meta.is_file(),
            out: BufWriter::with_capacity(64 * 1024, file),
        })
    }

    /// Whether the path no longer names the open file.
    fn moved(&self) -> bool {
        if !self.regular {
            return false;
        }
        match std::fs::metadata(&self.path) {
            Ok(meta) => file_id(&meta) != self.id,
            Err(_) => true,
        }
    }
}

/// A checkpoint line's length, at most (a long origin included).
const CHECKPOINT_BYTES: usize = 800;

pub(super) struct Writer {
    sink: Sink,
    chain: Chain,
    opts: Options,
    write_errors: Counter,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    /// The seq of the opener that began the writer's current segment.
    segment_from: u64,
    /// Lines written since the last sync to disk.
    unsynced: bool,
    /// Inside `rotate`: its own lines never start another rotation.
    rotating: bool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("chain", &self.chain)
            .finish()
    }
}

impl Writer {
    /// Opens the target, reads where its chain stands, and writes the
    /// line that starts (or continues) it.
    pub(super) fn open(
        target: &Target,
        opts: Options,
        write_errors: Counter,
    ) -> std::io::Result<Option<Self>> {
        let (sink, start) = match target {
            Target::Off => return Ok(None),
            Target::Stdout => (
                Sink::Stdout(BufWriter::new(std::io::stdout())),
                Resume {
                    how: How::Started,
                    chain: Chain::default(),
                    left_out: None,
                    note: None,
                    aside: false,
                },
            ),
            Target::File(path) => {
                let own = opts.signer.as_ref().map(|signer| Own {
                    signer,
                    origin: &opts.origin,
                });
                let mut start = resume(path, own)?;
                if start.aside {
                    let aside = set_aside_name(path);
                    std::fs::rename(path, &aside)?;
                    if let Some(note) = &mut start.note {
                        note.push_str(&format!(" (moved to {})", aside.display()));
                    }
                }
                (Sink::File(LogFile::open(path)?), start)
            }
        };
        if let Some(note) = &start.note {
            warn!(note = %note, "the decision log did not end as its writer left it");
        }
        let mut writer = Writer {
            sink,
            chain: start.chain,
            opts,
            write_errors,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            segment_from: 0,
            unsynced: false,
            rotating: false,
        };
        // The opener and its checkpoint go where the run begins, however
        // full the file: the next line rotates it.
        writer.rotating = true;
        writer.opened(start.how, start.left_out, start.note);
        writer.rotating = false;
        Ok(Some(writer))
    }

    /// Writes the opener of a segment.
    fn opened(&mut self, how: How, left_out: Option<LeftOut>, note: Option<String>) {
        let line = Opener {
            time: super::rfc3339(std::time::SystemTime::now()),
            chain: how,
            prev_seq: self.chain.seq,
            prev: self.chain.head.clone(),
            left_out,
            note,
        };
        self.emit(serde_json::to_vec(&line));
        self.segment_from = self.chain.seq;
        // Signed at once: a crash before the next checkpoint still leaves
        // one of the writer's own in the file to continue from.
        self.checkpoint(false);
        self.flush();
    }

    /// Writes what the queue held: the drop note first.
    pub(super) fn write(&mut self, dropped: Option<&Dropped>, records: &[Record]) {
        if let Some(dropped) = dropped {
            self.emit(serde_json::to_vec(dropped));
        }
        for record in records {
            match &record.batch {
                Some(batch) => {
                    for line in &batch.lines {
                        self.emit(Ok(line.clone()));
                    }
                }
                None => self.emit(record.to_json(&self.opts.redaction)),
            }
            // Every N lines, however the lines came in batches.
            if self.opts.signer.is_some() && self.since_checkpoint >= self.opts.checkpoint_lines {
                self.checkpoint(false);
            }
        }
    }

    /// Between batches: follows a file moved away, and signs a checkpoint
    /// when one is due: every N lines, every interval even when idle, and
    /// at the end (`closing`).
    pub(super) fn tick(&mut self, closing: bool) {
        if matches!(&self.sink, Sink::File(f) if f.moved()) {
            self.rotate(false);
        }
        let due = closing
            || self.since_checkpoint >= self.opts.checkpoint_lines
            || self.last_checkpoint.elapsed() >= self.opts.checkpoint_interval;
        if due {
            self.checkpoint(closing);
        }
        self.flush();
        if self.opts.sync_every_batch {
            self.sync();
        }
    }

    fn checkpoint(&mut self, closing: bool) {
        if self.opts.signer.is_none() {
            return;
        }
        // Room first: what it signs is the line before it in its file.
        self.make_room(CHECKPOINT_BYTES);
        let Some(signer) = &self.opts.signer else {
            return;
        };
        let line = Checkpoint::sign(
            Draft {
                origin: &self.opts.origin,
                from: self.segment_from,
                before: &self.chain,
                time: super::rfc3339(std::time::SystemTime::now()),
                every_s: self.opts.checkpoint_interval.as_secs().max(1),
                closing,
            },
            signer,
        );
        match serde_json::to_vec(&line) {
            Ok(json) => self.seal_write(&json),
            Err(e) => warn!(error = %e, "cannot write a decision log checkpoint"),
        }
        // A copy where the log's writer on disk cannot reach it: the
        // process log, for `verify-log --expect`.
        info!(
            origin = %self.opts.origin,
            expect = %format!("{}:{}", self.chain.seq, self.chain.head),
            closing,
            "decision log checkpoint"
        );
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        self.flush();
        self.sync();
    }

    /// Puts what is written on disk.
    fn sync(&mut self) {
        if !self.unsynced {
            return;
        }
        if let Sink::File(file) = &self.sink {
            if let Err(e) = file.out.get_ref().sync_data() {
                self.failed(&e);
            }
        }
        self.unsynced = false;
    }

    /// A new file at the path. `rename`: this writer moves the full file
    /// aside first (`--decision-log-max-bytes`); otherwise someone else
    /// already moved it.
    fn rotate(&mut self, rename: bool) {
        let Sink::File(file) = &self.sink else { return };
        let path = file.path.clone();
        self.rotating = true;
        self.rotate_to(&path, rename);
        self.rotating = false;
    }

    fn rotate_to(&mut self, path: &Path, rename: bool) {
        self.checkpoint(false);
        self.flush();
        if rename {
            let aside = rotated_name(path, self.chain.seq);
            if let Err(e) = std::fs::rename(path, &aside) {
                self.failed(&e);
                return;
            }
            if let Some(keep) = self.opts.keep {
                retire(path, keep);
            }
        }
        match LogFile::open(path) {
            Ok(file) => {
                self.sink = Sink::File(file);
                self.opened(How::Rotated, None, None);
            }
            // Lines keep going to the file that is open; the next tick
            // tries again.
            Err(e) => self.failed(&e),
        }
    }

    /// Seals one line into the chain and writes it.
    fn emit(&mut self, object: serde_json::Result<Vec<u8>>) {
        let object = match object.map(super::bound::bounded) {
            Ok(o) => o,
            Err(e) => {
                self.write_errors.inc();
                warn!(error = %e, "cannot write a decision log line");
                return;
            }
        };
        self.make_room(object.len());
        self.seal_write(&object);
    }

    /// Rotates first when a line of `len` bytes would grow the file past
    /// `--decision-log-max-bytes`.
    fn make_room(&mut self, len: usize) {
        if let (Sink::File(file), Some(max), false) =
            (&self.sink, self.opts.max_bytes, self.rotating)
        {
            if file.regular && file.size > 0 && file.size + len as u64 + 96 > max {
                self.rotate(true);
            }
        }
    }

    fn seal_write(&mut self, object: &[u8]) {
        let line = self.chain.seal(object);
        self.since_checkpoint += 1;
        self.raw(&line);
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.unsynced = true;
        let result = match &mut self.sink {
            Sink::Stdout(out) => out.write_all(bytes),
            Sink::File(file) => {
                file.size += bytes.len() as u64;
                file.out.write_all(bytes)
            }
        };
        if let Err(e) = result {
            self.failed(&e);
        }
    }

    pub(super) fn flush(&mut self) {
        let result = match &mut self.sink {
            Sink::Stdout(out) => out.flush(),
            Sink::File(file) => file.out.flush(),
        };
        if let Err(e) = result {
            self.failed(&e);
        }
    }

    fn failed(&self, e: &std::io::Error) {
        let n = self.write_errors.inc();
        if n.is_power_of_two() || n == 0 {
            warn!(error = %e, failures = n + 1, "cannot write the decision log");
        }
    }
}

/// Deletes the oldest files rotated by size from `path` (`FILE.<12
/// digits>`, whose names sort in order) beyond the newest `keep`.
fn retire(path: &Path, keep: usize) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut rotated: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.strip_prefix(&prefix)
                .is_some_and(|rest| rest.len() == 12 && rest.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path())
        .collect();
    rotated.sort();
    let surplus = rotated.len().saturating_sub(keep);
    for old in rotated.into_iter().take(surplus) {
        if let Err(e) = std::fs::remove_file(&old) {
            warn!(file = %old.display(), error = %e, "cannot delete an old decision log file");
        }
    }
}

/// `FILE.set-aside.<unix seconds>`, or with `.N` after it if taken.
fn set_aside_name(path: &Path) -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    free_name(format!("{}.set-aside.{now}", path.display()))
}

/// `FILE.<seq>` (12 digits, so the names sort in order), or with `.N`
/// after it if that is taken.
fn rotated_name(path: &Path, seq: u64) -> PathBuf {
    free_name(format!("{}.{seq:012}", path.display()))
}

/// `base`, or `base.N` for the first N not taken.
fn free_name(base: String) -> PathBuf {
    let mut name = PathBuf::from(&base);
    let mut n = 1;
    while name.exists() && n < 1000 {
        name = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    name
}
