//! Reading a decision log line by line in bounded memory, whatever the
//! file holds: a line longer than [`MAX_LINE_BYTES`] is kept only in part
//! (and its digest taken as it streams by), and reading goes on after it.
//! `verify-log`, `replay` and the writer's restart all read through it.

use std::io::{BufRead, BufReader, Read};

use sha2::{Digest, Sha256};

/// The longest line kept whole. The writer never writes a longer one
/// (its lines are bounded at [`super::MAX_LINE_BYTES`]); a longer one is
/// reported, counted and stepped over.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// One line as read.
#[derive(Debug)]
pub struct Raw {
    /// The line without its newline; only its first [`MAX_LINE_BYTES`]
    /// when `oversized`.
    pub bytes: Vec<u8>,
    /// Whether a newline ended it (the last line of a file may be cut).
    pub ended: bool,
    /// 1 for a file's first line.
    pub number: u64,
    /// Where it begins in the file.
    pub offset: u64,
    /// Its length in the file, newline included.
    pub len: u64,
    pub oversized: bool,
    /// The SHA-256 of an oversized line, taken as it streamed by.
    streamed: Option<[u8; 32]>,
}

impl Raw {
    /// The SHA-256 of the line as it is in the file, newline included.
    pub fn digest(&self) -> [u8; 32] {
        if let Some(d) = self.streamed {
            return d;
        }
        let mut h = Sha256::new();
        h.update(&self.bytes);
        if self.ended {
            h.update(b"\n");
        }
        h.finalize().into()
    }
}

/// Lines of a reader, from `offset` on.
#[derive(Debug)]
pub struct LineReader<R> {
    reader: BufReader<R>,
    number: u64,
    offset: u64,
}

impl<R: Read> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::at(inner, 0)
    }

    /// A reader whose first byte is at `offset` of its file.
    pub fn at(inner: R, offset: u64) -> Self {
        LineReader {
            reader: BufReader::with_capacity(256 * 1024, inner),
            number: 0,
            offset,
        }
    }

    /// The next line, or `None` at the end.
    pub fn next_line(&mut self) -> std::io::Result<Option<Raw>> {
        let mut bytes = Vec::new();
        let mut hasher: Option<Sha256> = None;
        let mut len = 0u64;
        let mut ended = false;
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let (piece, found) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (buf.get(..=i).unwrap_or(buf), true),
                None => (buf, false),
            };
            let taken = piece.len();
            len += taken as u64;
            let content = if found {
                piece.get(..taken - 1).unwrap_or_default()
            } else {
                piece
            };
            match &mut hasher {
                Some(h) => h.update(content),
                None if bytes.len() + content.len() > MAX_LINE_BYTES => {
                    let mut h = Sha256::new();
                    h.update(&bytes);
                    h.update(content);
                    let room = MAX_LINE_BYTES - bytes.len();
                    bytes.extend_from_slice(content.get(..room).unwrap_or_default());
                    hasher = Some(h);
                }
                None => bytes.extend_from_slice(content),
            }
            self.reader.consume(taken);
            if found {
                ended = true;
                break;
            }
        }
        if len == 0 {
            return Ok(None);
        }
        self.number += 1;
        let offset = self.offset;
        self.offset += len;
        let oversized = hasher.is_some();
        let streamed = hasher.map(|mut h| {
            if ended {
                h.update(b"\n");
            }
            h.finalize().into()
        });
        Ok(Some(Raw {
            bytes,
            ended,
            number: self.number,
            offset,
            len,
            oversized,
            streamed,
        }))
    }
}

/// The digest of a run of lines: the SHA-256 of their digests one after
/// another (so it can be taken line by line, in bounded memory).
#[derive(Debug, Clone, Default)]
pub struct RunDigest {
    hasher: Sha256,
    pub lines: u64,
    pub bytes: u64,
}

impl RunDigest {
    pub fn add(&mut self, raw: &Raw) {
        self.hasher.update(raw.digest());
        self.lines += 1;
        self.bytes += raw.len;
    }

    pub fn hex(&self) -> String {
        super::chain::hex(&self.hasher.clone().finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overlong_line_is_stepped_over_and_reading_goes_on() {
        let mut text = b"{\"a\":1}\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES * 3 + 5));
        text.extend(b"\n{\"b\":2}\nlast");
        let mut lines = LineReader::new(&text[..]);
        let one = lines.next_line().unwrap().unwrap();
        assert_eq!(
            (one.bytes.as_slice(), one.ended, one.offset),
            (&b"{\"a\":1}"[..], true, 0)
        );
        let long = lines.next_line().unwrap().unwrap();
        assert!(long.oversized);
        assert_eq!(long.bytes.len(), MAX_LINE_BYTES);
        assert_eq!(long.len, (MAX_LINE_BYTES * 3 + 6) as u64);
        let mut whole = vec![b'x'; MAX_LINE_BYTES * 3 + 5];
        whole.push(b'\n');
        assert_eq!(long.digest(), <[u8; 32]>::from(Sha256::digest(&whole)));
        let three = lines.next_line().unwrap().unwrap();
        assert_eq!(three.bytes, b"{\"b\":2}");
        assert_eq!(three.number, 3);
        assert_eq!(three.offset, 8 + long.len);
        let cut = lines.next_line().unwrap().unwrap();
        assert_eq!((cut.bytes.as_slice(), cut.ended), (&b"last"[..], false));
        assert!(lines.next_line().unwrap().is_none());
    }
}
