//! `verify-log`: walks decision log files in order, in bounded memory,
//! checking the hash chain line by line, every checkpoint's signature,
//! origin and segment, and what every restart left out.
//!
//! A line that breaks the chain is not yet a verdict: the next opener may
//! say it left exactly those bytes out (a line cut short by a crash, lines
//! after the writer's last checkpoint). What no opener accounts for is a
//! finding, typed ([`Failure`]). With keys, lines no checkpoint signs and
//! a log that ends without its closing checkpoint are findings too, unless
//! the end is allowed open.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::chain::{Chain, Sealed, unseal};
use super::checkpoint::{Checkpoint, Kind, LeftOut, kind_of};
use super::lines::{LineReader, Raw, RunDigest};
use crate::signing::PublicKey;

/// Notes kept in a verification; the rest are counted.
pub const MAX_NOTES: usize = 100;

/// What kind of tampering (or loss) a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    Edited,
    Removed,
    Inserted,
    Reordered,
    Truncated,
    Unsigned,
    Forged,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Edited => "edited",
            Failure::Removed => "removed",
            Failure::Inserted => "inserted",
            Failure::Reordered => "reordered",
            Failure::Truncated => "truncated",
            Failure::Unsigned => "unsigned",
            Failure::Forged => "forged",
        }
    }
}

/// Where and what.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    #[serde(rename = "type")]
    pub kind: Failure,
    pub path: PathBuf,
    pub line: u64,
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}:{}: {}",
            self.kind.as_str(),
            self.path.display(),
            self.line,
            self.what
        )
    }
}

/// What one file held.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileSummary {
    pub path: PathBuf,
    pub lines: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// How to verify.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub keys: Vec<PublicKey>,
    /// The origin every checkpoint must name (else: the first one's).
    pub origin: Option<String>,
    /// Accept lines no checkpoint signs after a crash and an end without
    /// its closing checkpoint (a log still written, or a crash), saying so.
    pub allow_open_end: bool,
    /// Lines (seq and hash, from a checkpoint kept elsewhere) the log must
    /// still hold.
    pub expect: Vec<Chain>,
}

/// What the walk found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verification {
    pub files: Vec<FileSummary>,
    /// Lines in the chain.
    pub lines: u64,
    /// Where the chain stands after its last line.
    pub head: Chain,
    /// The seq the first file's chain follows (0 from its start).
    pub follows_seq: u64,
    pub checkpoints: u64,
    /// Checkpoints whose signature a given key verified.
    pub signed: u64,
    pub signers: Vec<String>,
    pub origin: Option<String>,
    /// Lines after the last checkpoint.
    pub unsigned_tail: u64,
    /// Whether the last segment ended with its closing checkpoint.
    pub closed: bool,
    /// The time of the last checkpoint, and the interval it promised.
    pub last_checkpoint: Option<(String, u64)>,
    /// Lines over the readers' limit.
    pub oversized: u64,
    /// What the walk says without failing: the first
    /// [`MAX_NOTES`]…
    pub notes: Vec<String>,
    /// …and how many more there were.
    pub notes_not_listed: u64,
    /// The first finding; `None` when the log verifies.
    pub failure: Option<Finding>,
}

impl serde::Serialize for Chain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut out = s.serialize_struct("Chain", 2)?;
        out.serialize_field("seq", &self.seq)?;
        out.serialize_field("hash", &self.head)?;
        out.end()
    }
}

/// The segment being walked: one run of a writer.
#[derive(Debug, Default)]
struct Segment {
    /// Its opener's seq.
    from: u64,
    /// After its last checkpoint (verified, or counted without keys) and
    /// whether that one closed it.
    at_checkpoint: Option<(Chain, bool)>,
    /// Lines since that checkpoint (or the segment's start).
    since_checkpoint: RunDigest,
}

struct Walk<'a> {
    opts: &'a Options,
    v: Verification,
    chain: Option<Chain>,
    segment: Segment,
    /// A break not accounted for yet, and the lines from it on.
    pending: Option<(Finding, RunDigest)>,
    /// Findings that fail only with keys and without --allow-open-end.
    soft: Option<Finding>,
    /// Every line of the current file so far.
    file_run: RunDigest,
    expected: Vec<(Chain, bool)>,
    /// The pending run holds a checkpoint a given key signed: no restart
    /// left it out.
    pending_signed: bool,
    /// The key of the last checkpoint verified.
    last_key: Option<String>,
    /// After a closed chain a new one began, by the key named here: its
    /// first checkpoint must be another's.
    new_chain_after_closed: Option<String>,
}

/// Verifies `files` as one log, in the order given. An error is a file
/// that cannot be read.
pub fn verify(files: &[PathBuf], opts: &Options) -> Result<Verification, String> {
    let mut walk = Walk {
        opts,
        v: Verification::default(),
        chain: None,
        segment: Segment::default(),
        pending: None,
        soft: None,
        file_run: RunDigest::default(),
        expected: opts.expect.iter().map(|c| (c.clone(), false)).collect(),
        pending_signed: false,
        last_key: None,
        new_chain_after_closed: None,
    };
    let mut last_line = 0;
    for path in files {
        let read_error = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let mut lines = LineReader::new(File::open(path).map_err(read_error)?);
        walk.file_run = RunDigest::default();
        walk.v.files.push(FileSummary {
            path: path.clone(),
            lines: 0,
            first_seq: 0,
            last_seq: 0,
        });
        while let Some(raw) = lines.next_line().map_err(read_error)? {
            if let Err(finding) = walk.line(path, &raw) {
                walk.v.failure = Some(finding);
                return Ok(walk.v);
            }
            walk.file_run.add(&raw);
            last_line = raw.number;
        }
    }
    walk.end(last_line);
    if let Some(chain) = walk.chain.take() {
        walk.v.head = chain;
    }
    Ok(walk.v)
}

impl Walk<'_> {
    /// Keeps a note, or counts it past [`MAX_NOTES`].
    fn note(&mut self, note: String) {
        if self.v.notes.len() < MAX_NOTES {
            self.v.notes.push(note);
        } else {
            self.v.notes_not_listed += 1;
        }
    }

    fn finding(path: &Path, raw: &Raw, kind: Failure, what: impl Into<String>) -> Finding {
        Finding {
            kind,
            path: path.to_path_buf(),
            line: raw.number,
            what: what.into(),
        }
    }

    /// Takes one line; an error is a finding that ends the walk.
    fn line(&mut self, path: &Path, raw: &Raw) -> Result<(), Finding> {
        let read = read_line(raw);
        if let Ok((sealed, Kind::Opener(opener))) = &read {
            return self.opener(path, raw, sealed, opener);
        }
        if let Some((finding, run)) = &mut self.pending {
            // A line that follows the chain's last good line: the lines
            // between were put in, or moved.
            let resumed = match (&read, &self.chain) {
                (Ok((sealed, _)), Some(current)) => {
                    sealed.seq == current.seq.saturating_add(1) && sealed.follows(&current.head)
                }
                _ => false,
            };
            if resumed {
                finding.kind = if finding.kind == Failure::Removed {
                    Failure::Reordered
                } else {
                    Failure::Inserted
                };
                finding.what = format!(
                    "{} not in the chain before this line's seq, which the next line carries: {}",
                    crate::engine::plural(run.lines as usize, "line", "lines"),
                    finding.what
                );
                return Err(finding.clone());
            }
            run.add(raw);
            self.segment.since_checkpoint.add(raw);
            if let Ok((_, Kind::Checkpoint(c))) = &read {
                self.pending_signed |= self.opts.keys.iter().any(|k| c.verifies(k));
            }
            return Ok(());
        }
        let (sealed, kind) = match read {
            Ok(read) => read,
            Err((kind, what)) => return self.broken(Self::finding(path, raw, kind, what), raw),
        };
        let Some(current) = self.chain.clone() else {
            let what = format!(
                "the file does not begin where a chain begins (its first line has seq {}); \
                 lines before it are missing",
                sealed.seq
            );
            return Err(Self::finding(path, raw, Failure::Removed, what));
        };
        if let Err((failure, what)) = follows(&sealed, &current, self.file_run.lines == 0) {
            self.broken(Self::finding(path, raw, failure, what), raw)?;
            if let Kind::Checkpoint(c) = &kind {
                self.pending_signed = self.opts.keys.iter().any(|k| c.verifies(k));
            }
            return Ok(());
        }
        if let Some((at, true)) = &self.segment.at_checkpoint {
            {
                let what = format!(
                    "after the closing checkpoint at seq {}: a closed log gets no line until \
                     its server starts it again",
                    at.seq
                );
                return Err(Self::finding(path, raw, Failure::Inserted, what));
            }
        }
        if let Kind::Checkpoint(c) = &kind {
            self.checkpoint(c, &current)
                .map_err(|(kind, what)| Self::finding(path, raw, kind, what))?;
            self.accept(path, &sealed);
            self.segment.at_checkpoint =
                Some((self.chain.clone().unwrap_or_default(), c.checkpoint.closing));
            self.segment.since_checkpoint = RunDigest::default();
            self.v.unsigned_tail = 0;
            return Ok(());
        }
        self.accept(path, &sealed);
        self.segment.since_checkpoint.add(raw);
        self.v.unsigned_tail += 1;
        Ok(())
    }

    /// A line that breaks the chain: pending until an opener accounts for
    /// it or the walk ends.
    fn broken(&mut self, finding: Finding, raw: &Raw) -> Result<(), Finding> {
        if raw.oversized {
            self.v.oversized += 1;
        }
        let mut run = RunDigest::default();
        run.add(raw);
        self.segment.since_checkpoint.add(raw);
        self.pending = Some((finding, run));
        self.pending_signed = false;
        Ok(())
    }

    /// A line taken into the chain.
    fn accept(&mut self, path: &Path, sealed: &Sealed) {
        let chain = Chain {
            seq: sealed.seq,
            head: sealed.hash.clone(),
        };
        for (want, seen) in &mut self.expected {
            *seen |= *want == chain;
        }
        if let Some(summary) = self.v.files.last_mut().filter(|f| f.path == path) {
            if summary.lines == 0 {
                summary.first_seq = sealed.seq;
            }
            summary.last_seq = sealed.seq;
            summary.lines += 1;
        }
        self.v.lines += 1;
        self.chain = Some(chain);
    }

    fn checkpoint(&mut self, c: &Checkpoint, before: &Chain) -> Result<(), (Failure, String)> {
        let signed = &c.checkpoint;
        if signed.seq != before.seq || signed.head != before.head {
            return Err((
                Failure::Forged,
                format!(
                    "this checkpoint signs seq {} and another head than the line before it \
                     (seq {}): lines before it were changed and the chain sealed again",
                    signed.seq, before.seq
                ),
            ));
        }
        if signed.from != self.segment.from {
            return Err((
                Failure::Forged,
                format!(
                    "this checkpoint signs a run begun at seq {}, but its run began at seq {}",
                    signed.from, self.segment.from
                ),
            ));
        }
        let origin = self.opts.origin.as_ref().or(self.v.origin.as_ref());
        if let Some(origin) = origin.filter(|o| **o != signed.origin) {
            return Err((
                Failure::Forged,
                format!(
                    "this checkpoint is of another log (origin `{}`), not of `{origin}`",
                    signed.origin
                ),
            ));
        }
        self.v.origin = Some(signed.origin.clone());
        self.v.checkpoints += 1;
        self.v.last_checkpoint = Some((c.time.clone(), signed.every_s));
        self.v.closed = signed.closing;
        if self.opts.keys.is_empty() {
            return Ok(());
        }
        let Some(key) = self.opts.keys.iter().find(|k| k.key_id() == signed.key_id) else {
            return Err((
                Failure::Forged,
                format!(
                    "this checkpoint is signed by key {}, which is not a given --public-key",
                    signed.key_id
                ),
            ));
        };
        if !c.verifies(key) {
            return Err((
                Failure::Forged,
                format!(
                    "this checkpoint's signature does not verify with key {}",
                    signed.key_id
                ),
            ));
        }
        if let Some(before) = self.new_chain_after_closed.take() {
            if before == signed.key_id {
                return Err((
                    Failure::Reordered,
                    "a new chain by the key that closed the chain before it: a writer \
                     continues its own closed chain, so files are out of order or a chain \
                     was replaced"
                        .to_string(),
                ));
            }
        }
        self.last_key = Some(signed.key_id.clone());
        self.v.signed += 1;
        if !self.v.signers.contains(&signed.key_id) {
            self.v.signers.push(signed.key_id.clone());
        }
        Ok(())
    }
}

/// A line read as the writer writes them, or why it is not one.
fn read_line(raw: &Raw) -> Result<(Sealed, Kind), (Failure, String)> {
    if raw.oversized {
        return Err((
            Failure::Edited,
            format!(
                "a line of {} bytes: the writer writes none over 64 KiB",
                raw.len
            ),
        ));
    }
    let sealed = unseal(&raw.bytes).map_err(|why| {
        if raw.ended {
            (Failure::Edited, format!("not a line of the chain ({why})"))
        } else {
            (
                Failure::Truncated,
                "cut short: the file ends inside this line".to_string(),
            )
        }
    })?;
    let json = match serde_json::from_slice(&raw.bytes) {
        Ok(serde_json::Value::Object(json)) => json,
        Ok(_) => return Err((Failure::Edited, "not a JSON object".to_string())),
        Err(e) => return Err((Failure::Edited, format!("not JSON any more ({e})"))),
    };
    let kind = kind_of(&json).map_err(|why| (Failure::Edited, why))?;
    Ok((sealed, kind))
}

/// Whether `sealed` is the line after `current`.
fn follows(sealed: &Sealed, current: &Chain, first_of_file: bool) -> Result<(), (Failure, String)> {
    let want = current.seq.saturating_add(1);
    if first_of_file {
        return Err((
            Failure::Removed,
            format!(
                "the file does not begin where a chain continues (its first line has seq {}, \
                 after seq {}); lines before it are missing",
                sealed.seq, current.seq
            ),
        ));
    }
    if sealed.seq == want {
        if sealed.follows(&current.head) {
            return Ok(());
        }
        return Err((
            Failure::Edited,
            "its hash does not match its content and the line before it".to_string(),
        ));
    }
    if sealed.seq > want {
        let gap = if sealed.seq - want > 1 {
            format!("seq {want} to {} are", sealed.seq - 1)
        } else {
            format!("seq {want} is")
        };
        return Err((
            Failure::Removed,
            format!("{gap} missing before this line (seq {})", sealed.seq),
        ));
    }
    Err((
        Failure::Reordered,
        format!(
            "seq {} comes after seq {}: reordered or repeated",
            sealed.seq, current.seq
        ),
    ))
}

/// Whether a run of lines is what an opener says it left out.
fn matches(left_out: Option<&LeftOut>, run: &RunDigest) -> bool {
    match left_out {
        None => run.lines == 0,
        Some(l) => l.lines == run.lines && l.bytes == run.bytes && l.sha256 == run.hex(),
    }
}

mod segments;
