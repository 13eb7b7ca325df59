//! The decision log's writer thread: it seals every line into the hash
//! chain, writes it, rotates the file, and signs checkpoints; none of it
//! on the request path.
//!
//! - Opening a file that ends in a sealed line continues its chain (a
//!   restart): the first line written says `"chain":"continued"` with the
//!   seq and hash it follows. A new file says `"started"`.
//! - A file moved away (logrotate) or grown past `--decision-log-max-bytes`
//!   (then renamed to `FILE.<last seq, 12 digits>`) is followed by a new
//!   file at the path whose first line says `"rotated"` and names the last
//!   seq and hash of the one before.
//! - With a signing key, a checkpoint line every N lines or S seconds (and
//!   before a rotation and at shutdown) signs the hash of the line before
//!   it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tracing::warn;

use super::chain::{Chain, Tail, read_tail};
use super::line::{Record, Redaction};
use super::{Dropped, Target};
use crate::signing::{Signer, checkpoint_message};

/// How the decision log is written, beyond where.
#[derive(Debug, Default)]
pub struct Options {
    pub redaction: Redaction,
    /// Rotate the file once it would grow past this many bytes.
    pub max_bytes: Option<u64>,
    pub signer: Option<Signer>,
    /// A checkpoint after this many lines…
    pub checkpoint_lines: u64,
    /// …or this long after the last one, whichever comes first.
    pub checkpoint_interval: Duration,
}

/// Where a chain starts in a file: the first line the writer writes.
#[derive(Serialize)]
struct Opened<'a> {
    time: String,
    /// `started`, `continued` or `rotated`.
    chain: &'static str,
    prev_seq: u64,
    prev: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
}

#[derive(Serialize)]
struct Checkpoint<'a> {
    time: String,
    checkpoint: Signed<'a>,
}

#[derive(Serialize)]
struct Signed<'a> {
    seq: u64,
    head: &'a str,
    key_id: &'a str,
    signature: String,
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

pub(super) struct Writer {
    sink: Sink,
    chain: Chain,
    opts: Options,
    write_errors: Counter,
    since_checkpoint: u64,
    last_checkpoint: Instant,
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
        let (sink, chain, how, note, partial) = match target {
            Target::Off => return Ok(None),
            Target::Stdout => (
                Sink::Stdout(BufWriter::new(std::io::stdout())),
                Chain::default(),
                "started",
                None,
                false,
            ),
            Target::File(path) => {
                let (tail, partial) = read_tail(path)?;
                let file = LogFile::open(path)?;
                // With a key, the server signs only a chain it can trust:
                // one that runs from a checkpoint it signed itself.
                let tail = match (tail, &opts.signer) {
                    (Tail::Sealed(_), Some(signer)) => match signed_tail(path, signer)? {
                        Some(chain) => Tail::Sealed(chain),
                        None => Tail::Unsealed(
                            "its end does not follow a checkpoint this server's key signed",
                        ),
                    },
                    (tail, _) => tail,
                };
                match tail {
                    Tail::Empty => (Sink::File(file), Chain::default(), "started", None, partial),
                    Tail::Sealed(chain) => (Sink::File(file), chain, "continued", None, partial),
                    Tail::Unsealed(why) => (
                        Sink::File(file),
                        Chain::default(),
                        "started",
                        Some(why),
                        partial,
                    ),
                }
            }
        };
        let mut writer = Writer {
            sink,
            chain,
            opts,
            write_errors,
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
            rotating: false,
        };
        if partial {
            // A write cut short: the new line starts on a line of its own
            // (verify-log still names the cut one).
            writer.raw(b"\n");
        }
        let note = note.map(|why| format!("the file's last line is not sealed: {why}"));
        writer.opened(how, note.as_deref());
        writer.flush();
        Ok(Some(writer))
    }

    fn opened(&mut self, how: &'static str, note: Option<&str>) {
        let prev = self.chain.head.clone();
        let line = Opened {
            time: super::rfc3339(std::time::SystemTime::now()),
            chain: how,
            prev_seq: self.chain.seq,
            prev: &prev,
            note,
        };
        self.emit(serde_json::to_vec(&line));
    }

    /// Writes what the queue held: the drop note first.
    pub(super) fn write(&mut self, dropped: Option<&Dropped>, records: &[Record]) {
        if let Some(dropped) = dropped {
            self.emit(serde_json::to_vec(dropped));
        }
        for record in records {
            let json = record.to_json(&self.opts.redaction);
            self.emit(json);
            // Every N lines, however the lines came in batches.
            if self.opts.signer.is_some() && self.since_checkpoint >= self.opts.checkpoint_lines {
                self.checkpoint();
            }
        }
    }

    /// Between batches: follows a file moved away, and signs a checkpoint
    /// when one is due (`closing`: now, if any line is unsigned).
    pub(super) fn tick(&mut self, closing: bool) {
        if matches!(&self.sink, Sink::File(f) if f.moved()) {
            self.rotate(false);
        }
        let due = self.since_checkpoint > 0
            && (closing
                || self.since_checkpoint >= self.opts.checkpoint_lines
                || self.last_checkpoint.elapsed() >= self.opts.checkpoint_interval);
        if due {
            self.checkpoint();
        }
        self.flush();
    }

    fn checkpoint(&mut self) {
        let Some(signer) = &self.opts.signer else {
            return;
        };
        let signature = signer.sign(&checkpoint_message(self.chain.seq, &self.chain.head));
        let line = Checkpoint {
            time: super::rfc3339(std::time::SystemTime::now()),
            checkpoint: Signed {
                seq: self.chain.seq,
                head: &self.chain.head,
                key_id: signer.key_id(),
                signature,
            },
        };
        let json = serde_json::to_vec(&line);
        self.emit(json);
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
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
        if self.since_checkpoint > 0 {
            self.checkpoint();
        }
        self.flush();
        if rename {
            let aside = rotated_name(path, self.chain.seq);
            if let Err(e) = std::fs::rename(path, &aside) {
                self.failed(&e);
                return;
            }
        }
        match LogFile::open(path) {
            Ok(file) => {
                self.sink = Sink::File(file);
                self.opened("rotated", None);
            }
            // Lines keep going to the file that is open; the next tick
            // tries again.
            Err(e) => self.failed(&e),
        }
    }

    /// Seals one line into the chain and writes it.
    fn emit(&mut self, object: serde_json::Result<Vec<u8>>) {
        let object = match object {
            Ok(o) => o,
            Err(e) => {
                self.write_errors.inc();
                warn!(error = %e, "cannot write a decision log line");
                return;
            }
        };
        if let (Sink::File(file), Some(max), false) =
            (&self.sink, self.opts.max_bytes, self.rotating)
        {
            if file.regular && file.size > 0 && file.size + object.len() as u64 + 96 > max {
                self.rotate(true);
            }
        }
        let line = self.chain.seal(&object);
        self.since_checkpoint += 1;
        self.raw(&line);
    }

    fn raw(&mut self, bytes: &[u8]) {
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

/// How much of a file's end is read to find the checkpoint its chain
/// continues from.
const SIGNED_TAIL_BYTES: u64 = 8 * 1024 * 1024;

/// Where the chain at the end of `path` stands, if it runs unbroken from
/// the last checkpoint `signer` signed (within the file's last
/// [`SIGNED_TAIL_BYTES`]); `None` if it does not: lines written or
/// rewritten by someone else are not continued, and so never signed.
fn signed_tail(path: &Path, signer: &Signer) -> std::io::Result<Option<Chain>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(SIGNED_TAIL_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut end = Vec::new();
    file.take(SIGNED_TAIL_BYTES).read_to_end(&mut end)?;
    let mut lines: Vec<&[u8]> = end.split(|&b| b == b'\n').collect();
    // The part after the last newline is a cut line (or nothing); the
    // first part is cut too when the read began inside the file.
    lines.pop();
    if start > 0 && !lines.is_empty() {
        lines.remove(0);
    }
    let key = crate::signing::PublicKey::of(signer);
    let signed_at = lines.iter().rposition(|line| {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(line) else {
            return false;
        };
        let field = |name: &str| json.get("checkpoint").and_then(|c| c.get(name));
        let (Some(seq), Some(head), Some(id), Some(signature)) = (
            field("seq").and_then(serde_json::Value::as_u64),
            field("head").and_then(serde_json::Value::as_str),
            field("key_id").and_then(serde_json::Value::as_str),
            field("signature").and_then(serde_json::Value::as_str),
        ) else {
            return false;
        };
        id == key.key_id() && key.verifies(&checkpoint_message(seq, head), signature)
    });
    let Some(at) = signed_at else {
        return Ok(None);
    };
    let Some(first) = lines.get(at).and_then(|l| super::chain::unseal(l).ok()) else {
        return Ok(None);
    };
    let json: serde_json::Value =
        serde_json::from_slice(lines.get(at).copied().unwrap_or_default()).unwrap_or_default();
    let head = json
        .get("checkpoint")
        .and_then(|c| c.get("head"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    if !first.follows(head) {
        return Ok(None);
    }
    let mut chain = Chain {
        seq: first.seq,
        head: first.hash,
    };
    for line in lines.iter().skip(at + 1) {
        match super::chain::unseal(line) {
            Ok(next) if next.seq == chain.seq.saturating_add(1) && next.follows(&chain.head) => {
                chain = Chain {
                    seq: next.seq,
                    head: next.hash,
                };
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(chain))
}

/// `FILE.<seq>` (12 digits, so the names sort in order), or with `.N`
/// after it if that is taken.
fn rotated_name(path: &Path, seq: u64) -> PathBuf {
    let base = format!("{}.{seq:012}", path.display());
    let mut name = PathBuf::from(&base);
    let mut n = 1;
    while name.exists() && n < 1000 {
        name = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    name
}
