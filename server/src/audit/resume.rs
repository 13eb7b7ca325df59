//! Where a restarted writer continues its log, so that it never vouches
//! for a line it did not write.
//!
//! - With a signing key it continues from its own last checkpoint (its
//!   origin, its key, a signature that verifies), found from the file's
//!   end. Every line after that checkpoint — written before a crash, or by
//!   someone else — is left out: the opener records how many lines and
//!   bytes, and their digest, so they can be neither edited nor added to
//!   unseen once the next checkpoint signs the opener. A file without
//!   such a checkpoint (written without a key, or by someone else) is
//!   moved aside, and a new file begins a new chain.
//! - Without a key it continues from the file's last complete line, if
//!   sealed.
//! - A file that ends inside a line (a write cut short) gets the newline
//!   first, and the cut line is left out, not taken for an edit.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::chain::{Chain, unseal};
use super::checkpoint::{How, Kind, LeftOut, kind_of};
use super::lines::{LineReader, RunDigest};
use crate::signing::{PublicKey, Signer};

/// How far back from a file's end its writer looks for its own last
/// checkpoint (or the last complete line).
const SCAN_BYTES: u64 = 256 * 1024 * 1024;
/// Read back in windows of this size…
const WINDOW: u64 = 4 * 1024 * 1024;
/// …overlapping by this much: any line this short is whole in the window
/// where it begins (a checkpoint or an opener is far shorter).
const OVERLAP: u64 = 64 * 1024;

/// Where a writer's run begins in an existing file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub how: How,
    /// What the opener follows.
    pub chain: Chain,
    pub left_out: Option<LeftOut>,
    pub note: Option<String>,
    /// The file is to be moved aside and a new one begun: a signing
    /// writer found no checkpoint of its own in it.
    pub aside: bool,
}

impl Resume {
    fn fresh() -> Self {
        Resume {
            how: How::Started,
            chain: Chain::default(),
            left_out: None,
            note: None,
            aside: false,
        }
    }
}

/// The writer's own identity, when it signs.
#[derive(Debug, Clone, Copy)]
pub struct Own<'a> {
    pub signer: &'a Signer,
    pub origin: &'a str,
}

/// Reads `path`'s end (ending a cut line first) and says where the writer
/// continues.
pub fn resume(path: &Path, own: Option<Own<'_>>) -> std::io::Result<Resume> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() || meta.len() == 0 => return Ok(Resume::fresh()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Resume::fresh()),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)?;
    let len = file.metadata()?.len();
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    // Where the complete lines end: a cut line after them is ended now.
    let (complete, len, torn) = if last[0] == b'\n' {
        (len, len, false)
    } else {
        let cut = last_newline(&mut file, len)?.map_or(0, |at| at + 1);
        file.write_all(b"\n")?;
        (cut, len + 1, true)
    };
    let found = match own {
        Some(own) => {
            let key = PublicKey::of(own.signer);
            find_last(&mut file, len, |line| {
                own_checkpoint(line, &key, own.origin)
            })?
        }
        None => find_last(&mut file, complete, |line| Some(unseal(line).ok()))?.and_then(
            |(sealed, end)| {
                let chain = sealed.map(|s| Chain {
                    seq: s.seq,
                    head: s.hash,
                })?;
                Some(((chain, false), end))
            },
        ),
    };
    let Some(((chain, closing), end)) = found else {
        if own.is_some() {
            return Ok(Resume {
                note: Some(
                    "no checkpoint of this server's (its origin and key) near the end of the \
                     file that was at this path: it was moved aside, and a new chain starts"
                        .to_string(),
                ),
                aside: true,
                ..Resume::fresh()
            });
        }
        return started(&mut file, len, torn);
    };
    if end == len {
        return Ok(Resume {
            how: How::Continued,
            chain,
            left_out: None,
            note: None,
            aside: false,
        });
    }
    let left_out = left_out(&mut file, end, torn)?;
    let lines = crate::engine::plural(left_out.lines as usize, "line", "lines");
    let note = match (own.is_some(), closing) {
        (true, true) => format!(
            "{lines} after this server's closing checkpoint (seq {}) are not its own: left out",
            chain.seq
        ),
        (true, false) => format!(
            "the server stopped without closing its log (a crash?): {lines} after its last \
             checkpoint (seq {}) are signed by no one: left out",
            chain.seq
        ),
        (false, _) => format!(
            "the file ended inside a line (a write cut short): {} left out",
            crate::engine::plural(left_out.bytes as usize, "byte", "bytes")
        ),
    };
    Ok(Resume {
        how: How::Continued,
        chain,
        left_out: Some(left_out),
        note: Some(note),
        aside: false,
    })
}

/// A new chain in a file whose last line is not sealed (a writer without
/// a key).
fn started(file: &mut File, len: u64, torn: bool) -> std::io::Result<Resume> {
    let why = "the file's last line is not sealed";
    let left_out = if len <= SCAN_BYTES {
        left_out(file, 0, torn)?
    } else {
        LeftOut {
            lines: 0,
            bytes: len,
            sha256: String::new(),
            torn,
        }
    };
    Ok(Resume {
        how: How::Started,
        chain: Chain::default(),
        note: Some(format!(
            "{why}: a new chain starts, the {} before it left out",
            crate::engine::plural(len as usize, "byte", "bytes")
        )),
        left_out: Some(left_out),
        aside: false,
    })
}

/// The lines from `from` to the file's end.
fn left_out(file: &mut File, from: u64, torn: bool) -> std::io::Result<LeftOut> {
    file.seek(SeekFrom::Start(from))?;
    let mut lines = LineReader::at(&mut *file, from);
    let mut run = RunDigest::default();
    while let Some(raw) = lines.next_line()? {
        run.add(&raw);
    }
    Ok(LeftOut {
        lines: run.lines,
        bytes: run.bytes,
        sha256: run.hex(),
        torn,
    })
}

/// The chain after `line` and whether it closed its run, if it is a
/// checkpoint of this writer.
fn own_checkpoint(line: &[u8], key: &PublicKey, origin: &str) -> Option<(Chain, bool)> {
    if !line.windows(14).any(|w| w == b"\"checkpoint\":{") {
        return None;
    }
    let sealed = unseal(line).ok()?;
    let serde_json::Value::Object(json) = serde_json::from_slice(line).ok()? else {
        return None;
    };
    let Ok(Kind::Checkpoint(c)) = kind_of(&json) else {
        return None;
    };
    // Its seal must follow the line it signs: the signature does not
    // cover the `hash` member, which anyone can write.
    let before = c.checkpoint.head.clone();
    let ours = c.checkpoint.origin == origin
        && c.checkpoint.seq.checked_add(1) == Some(sealed.seq)
        && sealed.follows(&before)
        && c.verifies(key);
    ours.then_some((
        Chain {
            seq: sealed.seq,
            head: sealed.hash,
        },
        c.checkpoint.closing,
    ))
}

/// The last complete line within `[upto - SCAN_BYTES, upto)` for which
/// `pick` says something, and the offset after its newline.
fn find_last<T>(
    file: &mut File,
    upto: u64,
    mut pick: impl FnMut(&[u8]) -> Option<T>,
) -> std::io::Result<Option<(T, u64)>> {
    let floor = upto.saturating_sub(SCAN_BYTES);
    let mut start = upto;
    let mut buf = Vec::new();
    while start > floor {
        let begin = start.saturating_sub(WINDOW).max(floor);
        let end = (start + OVERLAP).min(upto);
        buf.clear();
        file.seek(SeekFrom::Start(begin))?;
        (&mut *file).take(end - begin).read_to_end(&mut buf)?;
        // Skip the end of a line begun before the window.
        let mut at = if begin == 0 {
            0
        } else {
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => buf.len(),
            }
        };
        let mut found = None;
        while let Some(rest) = buf.get(at..) {
            let Some(i) = rest.iter().position(|&b| b == b'\n') else {
                break;
            };
            // Lines beginning past the window were looked at already.
            if begin + at as u64 >= start {
                break;
            }
            if let Some(t) = rest.get(..i).and_then(&mut pick) {
                found = Some((t, begin + (at + i + 1) as u64));
            }
            at += i + 1;
        }
        if found.is_some() {
            return Ok(found);
        }
        start = begin;
    }
    Ok(None)
}

/// The offset of the file's last newline before `len`, looked for within
/// [`SCAN_BYTES`].
fn last_newline(file: &mut File, len: u64) -> std::io::Result<Option<u64>> {
    let floor = len.saturating_sub(SCAN_BYTES);
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > floor {
        let begin = end.saturating_sub(buf.len() as u64).max(floor);
        let chunk = buf.get_mut(..(end - begin) as usize).unwrap_or_default();
        file.seek(SeekFrom::Start(begin))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(begin + i as u64));
        }
        end = begin;
    }
    Ok(None)
}
