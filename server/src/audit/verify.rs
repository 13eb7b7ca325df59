//! `verify-log`: walks decision log files in order and checks the hash
//! chain line by line, and every signed checkpoint with the given public
//! keys. It stops at the first line that breaks the chain and says what
//! happened there: edited, removed, inserted, reordered or cut short.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::chain::{Chain, Sealed, unseal};
use crate::signing::{PublicKey, checkpoint_message};

/// The longest line read; a longer one is not a line the server wrote.
const MAX_LINE_BYTES: u64 = 1024 * 1024;

/// What one file held.
#[derive(Debug, Clone)]
pub struct FileSummary {
    pub path: PathBuf,
    pub lines: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// The first line that breaks the chain.
#[derive(Debug, Clone)]
pub struct Broken {
    pub path: PathBuf,
    pub line: u64,
    pub what: String,
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.what)
    }
}

/// What the walk found.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    pub files: Vec<FileSummary>,
    /// Lines verified (up to the broken one).
    pub lines: u64,
    /// Where the chain stands after the last verified line.
    pub head: Chain,
    /// The seq the first file's chain follows (0 from its start).
    pub follows_seq: u64,
    pub checkpoints: u64,
    /// Checkpoints whose signature a given key verified.
    pub signed: u64,
    /// The ids of the keys that signed them.
    pub signers: Vec<String>,
    /// Lines after the last verified checkpoint.
    pub unsigned_tail: u64,
    pub broken: Option<Broken>,
}

/// A line as read: its bytes, and whether a newline ended it.
struct Raw {
    bytes: Vec<u8>,
    ended: bool,
    number: u64,
}

struct Lines {
    reader: BufReader<File>,
    number: u64,
    peeked: Option<Raw>,
    done: bool,
}

impl Lines {
    fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Lines {
            reader: BufReader::with_capacity(256 * 1024, File::open(path)?),
            number: 0,
            peeked: None,
            done: false,
        })
    }

    fn read(&mut self) -> std::io::Result<Option<Raw>> {
        if self.done {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut bytes)?;
        if n == 0 {
            self.done = true;
            return Ok(None);
        }
        self.number += 1;
        let ended = bytes.last() == Some(&b'\n');
        if ended {
            bytes.pop();
        }
        Ok(Some(Raw {
            bytes,
            ended,
            number: self.number,
        }))
    }

    fn next(&mut self) -> std::io::Result<Option<Raw>> {
        match self.peeked.take() {
            Some(raw) => Ok(Some(raw)),
            None => self.read(),
        }
    }

    fn peek(&mut self) -> std::io::Result<Option<&Raw>> {
        if self.peeked.is_none() {
            self.peeked = self.read()?;
        }
        Ok(self.peeked.as_ref())
    }
}

/// Verifies `files` as one chain, in the order given. An error is a file
/// that cannot be read.
pub fn verify(files: &[PathBuf], keys: &[PublicKey]) -> Result<Verification, String> {
    let mut v = Verification::default();
    let mut chain: Option<Chain> = None;
    for path in files {
        let mut lines =
            Lines::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut summary = FileSummary {
            path: path.clone(),
            lines: 0,
            first_seq: 0,
            last_seq: 0,
        };
        let read_error = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        while let Some(raw) = lines.next().map_err(read_error)? {
            let broken = |what: String| Broken {
                path: path.clone(),
                line: raw.number,
                what,
            };
            let next_seq = lines
                .peek()
                .map_err(read_error)?
                .and_then(|next| unseal(&next.bytes).ok());
            match check_line(
                &raw,
                next_seq.as_ref(),
                &mut chain,
                summary.lines == 0,
                keys,
                &mut v,
            ) {
                Ok(seq) => {
                    if summary.lines == 0 {
                        summary.first_seq = seq;
                    }
                    summary.last_seq = seq;
                    summary.lines += 1;
                    v.lines += 1;
                }
                Err(what) => {
                    v.broken = Some(broken(what));
                    v.files.push(summary);
                    return Ok(v);
                }
            }
        }
        v.files.push(summary);
    }
    if let Some(chain) = chain {
        v.head = chain;
    }
    Ok(v)
}

/// Checks one line against the chain so far; its seq, or what is wrong.
fn check_line(
    raw: &Raw,
    next: Option<&Sealed>,
    chain: &mut Option<Chain>,
    first_of_file: bool,
    keys: &[PublicKey],
    v: &mut Verification,
) -> Result<u64, String> {
    let sealed = unseal(&raw.bytes).map_err(|why| {
        if raw.ended {
            format!("not a line of the chain ({why}): edited or inserted")
        } else {
            "cut short: the file ends inside this line".to_string()
        }
    })?;
    let json: serde_json::Value = serde_json::from_slice(&raw.bytes)
        .map_err(|e| format!("edited: not JSON any more ({e})"))?;
    let opened = json.get("chain").and_then(|c| c.as_str());
    let prev_of_line = || -> Option<Chain> {
        Some(Chain {
            seq: json.get("prev_seq")?.as_u64()?,
            head: json.get("prev")?.as_str()?.to_string(),
        })
    };
    let expected = match (chain.as_ref(), opened) {
        // The first line of all: it must start a chain, whose start it
        // names.
        (None, Some("started" | "rotated")) => {
            let prev = prev_of_line().ok_or("edited: its `prev` or `prev_seq` is missing")?;
            v.follows_seq = prev.seq;
            prev
        }
        (None, _) => {
            return Err(format!(
                "removed: the file does not begin where a chain begins (its first line has \
                 seq {}); lines before it are missing",
                sealed.seq
            ));
        }
        (Some(_), Some("started")) => {
            return Err(
                "a new chain starts here: the log's end before it was not sealed \
                 (a line edited or cut short before a restart)"
                    .to_string(),
            );
        }
        (Some(current), Some(_)) => {
            let prev = prev_of_line().ok_or("edited: its `prev` or `prev_seq` is missing")?;
            if prev != *current {
                let place = if first_of_file {
                    "the file before it ends"
                } else {
                    "the line before it is"
                };
                return Err(format!(
                    "this file does not continue the chain: it follows seq {}, but {place} at \
                     seq {} (a file is missing between them, or they are out of order)",
                    prev.seq, current.seq
                ));
            }
            prev
        }
        (Some(current), None) if first_of_file => {
            return Err(format!(
                "removed: the file does not begin where a chain continues (its first line has \
                 seq {}, after seq {}); lines before it are missing",
                sealed.seq, current.seq
            ));
        }
        (Some(current), None) => current.clone(),
    };
    let want = expected
        .seq
        .checked_add(1)
        .ok_or("edited: a seq at the end of the numbers")?;
    if sealed.seq == want {
        if !sealed.follows(&expected.head) {
            let inserted = next.is_some_and(|n| n.seq == sealed.seq && n.follows(&expected.head));
            return Err(if inserted {
                format!(
                    "inserted: this line is not in the chain; the next line carries seq {} and is",
                    sealed.seq
                )
            } else {
                "edited: its hash does not match its content and the line before it".to_string()
            });
        }
    } else if sealed.seq > want {
        let swapped = next.is_some_and(|n| n.seq == want);
        return Err(if swapped {
            format!(
                "reordered: seq {} comes before seq {want}, which is on the next line",
                sealed.seq
            )
        } else {
            format!(
                "removed: seq {want}{} missing before this line (seq {})",
                if sealed.seq - want > 1 {
                    format!(" to {} are", sealed.seq - 1)
                } else {
                    " is".to_string()
                },
                sealed.seq
            )
        });
    } else {
        return Err(format!(
            "reordered or repeated: seq {} comes after seq {}",
            sealed.seq, expected.seq
        ));
    }
    if let Some(checkpoint) = json.get("checkpoint") {
        check_checkpoint(checkpoint, &expected, keys, v)?;
    } else {
        v.unsigned_tail += 1;
    }
    *chain = Some(Chain {
        seq: sealed.seq,
        head: sealed.hash,
    });
    Ok(want)
}

fn check_checkpoint(
    checkpoint: &serde_json::Value,
    before: &Chain,
    keys: &[PublicKey],
    v: &mut Verification,
) -> Result<(), String> {
    let field = |name: &str| checkpoint.get(name).and_then(|f| f.as_str());
    let (Some(head), Some(seq), Some(key_id), Some(signature)) = (
        field("head"),
        checkpoint.get("seq").and_then(|s| s.as_u64()),
        field("key_id"),
        field("signature"),
    ) else {
        return Err("edited: a checkpoint without its head, seq, key_id or signature".to_string());
    };
    if seq != before.seq {
        return Err(format!(
            "this checkpoint signs seq {seq}, not the line before it (seq {})",
            before.seq
        ));
    }
    if head != before.head {
        return Err(
            "forged: this checkpoint signs another head than the line before it \
             (lines before it were changed and the chain sealed again)"
                .to_string(),
        );
    }
    v.checkpoints += 1;
    if keys.is_empty() {
        v.unsigned_tail = 0;
        return Ok(());
    }
    let Some(key) = keys.iter().find(|k| k.key_id() == key_id) else {
        return Err(format!(
            "this checkpoint is signed by key {key_id}, which is not a given --public-key (forged?)"
        ));
    };
    if !key.verifies(&checkpoint_message(seq, head), signature) {
        return Err(format!(
            "forged: this checkpoint's signature does not verify with key {key_id}"
        ));
    }
    v.signed += 1;
    v.unsigned_tail = 0;
    if !v.signers.iter().any(|s| s == key_id) {
        v.signers.push(key_id.to_string());
    }
    Ok(())
}
