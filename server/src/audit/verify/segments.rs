//! The walk's judgement of openers (what each restart left out) and of the
//! log's end.

use std::path::Path;

use super::super::chain::{Chain, Sealed};
use super::super::checkpoint::{How, Opener};
use super::super::lines::{Raw, RunDigest};
use super::{Failure, Finding, Segment, Walk, matches};

impl Walk<'_> {
    /// An opener: it begins a segment, and may account for the lines
    /// before it that broke the chain.
    pub(super) fn opener(
        &mut self,
        path: &Path,
        raw: &Raw,
        sealed: &Sealed,
        o: &Opener,
    ) -> Result<(), Finding> {
        let at = |kind, what: String| Self::finding(path, raw, kind, what);
        let prev = o.prev();
        let left = match o.chain {
            How::Rotated => {
                if self.file_run.lines > 0 {
                    return self.not_accounted(raw, || {
                        at(
                            Failure::Inserted,
                            "a `rotated` opener inside a file: it only begins one".into(),
                        )
                    });
                }
                if let Some((finding, _)) = self.pending.take() {
                    return Err(finding);
                }
                match &self.chain {
                    None => self.v.follows_seq = prev.seq,
                    Some(c) if *c == prev => {}
                    Some(c) => {
                        return Err(at(
                            Failure::Removed,
                            format!(
                                "this file does not continue the chain: it follows seq {}, but \
                                 the file before it ends at seq {} (a file is missing between \
                                 them, or they are out of order)",
                                prev.seq, c.seq
                            ),
                        ));
                    }
                }
                None
            }
            How::Continued => match self.continued_from(o, &prev) {
                // A restart continues a file: its opener never begins one.
                Some(left) if self.file_run.lines > 0 => left,
                _ => {
                    return self.not_accounted(raw, || {
                        at(
                            Failure::Removed,
                            format!(
                                "this restart continues from seq {}, which is neither the line \
                                 before it nor the last checkpoint before it: lines between \
                                 are missing or were added",
                                prev.seq
                            ),
                        )
                    });
                }
            },
            How::Started => {
                let before = RunDigest::clone(&self.file_run);
                let told = match &o.left_out {
                    None => raw.offset == 0,
                    Some(l) => {
                        l.bytes == raw.offset
                            && (l.sha256.is_empty()
                                || (l.sha256 == before.hex() && l.lines == before.lines))
                    }
                };
                if !told || self.pending_signed {
                    return self.not_accounted(raw, || {
                        at(
                            Failure::Inserted,
                            format!(
                                "this new chain says it follows {} bytes, but {} precede it",
                                o.left_out.as_ref().map_or(0, |l| l.bytes),
                                raw.offset
                            ),
                        )
                    });
                }
                if raw.offset == 0 && self.chain.is_some() {
                    self.new_file_chain(raw, at)?;
                }
                if raw.offset > 0 {
                    self.chain_replaced(raw)?;
                }
                self.chain = Some(Chain::default());
                None
            }
        };
        if let Some((run, after_checkpoint)) = left {
            self.left_out(raw, o, &run, after_checkpoint, at)?;
        }
        if sealed.seq != prev.seq.saturating_add(1) || !sealed.follows(&prev.head) {
            return Err(at(
                Failure::Edited,
                "this opener's hash does not match its content and the line it follows".into(),
            ));
        }
        self.pending = None;
        self.pending_signed = false;
        self.accept(path, sealed);
        self.segment = Segment {
            from: sealed.seq,
            ..Segment::default()
        };
        self.v.closed = false;
        self.v.unsigned_tail = 1;
        Ok(())
    }

    /// What a `continued` opener left out, if it continues from the
    /// chain's last line or from the last checkpoint (second value).
    fn continued_from(&self, o: &Opener, prev: &Chain) -> Option<Option<(RunDigest, bool)>> {
        // A restart continues from its last checkpoint: lines holding a
        // later one were not left out by it.
        if self.pending_signed {
            return None;
        }
        let since_good = self
            .pending
            .as_ref()
            .map(|(_, run)| run.clone())
            .unwrap_or_default();
        if self.chain.as_ref() == Some(prev) && matches(o.left_out.as_ref(), &since_good) {
            return Some(Some((since_good, false)));
        }
        let checkpoint = self.segment.at_checkpoint.as_ref().map(|(c, _)| c);
        if checkpoint == Some(prev) && matches(o.left_out.as_ref(), &self.segment.since_checkpoint)
        {
            return Some(Some((self.segment.since_checkpoint.clone(), true)));
        }
        None
    }

    /// An opener that does not account for the break before it is one
    /// more line after the break; with no break, it is the finding.
    fn not_accounted(
        &mut self,
        raw: &Raw,
        finding: impl FnOnce() -> Finding,
    ) -> Result<(), Finding> {
        match &mut self.pending {
            Some((_, run)) => {
                run.add(raw);
                self.segment.since_checkpoint.add(raw);
                Ok(())
            }
            None => Err(finding()),
        }
    }

    /// Judges the lines a restart left out.
    fn left_out(
        &mut self,
        raw: &Raw,
        o: &Opener,
        run: &RunDigest,
        after_checkpoint: bool,
        at: impl Fn(Failure, String) -> Finding,
    ) -> Result<(), Finding> {
        let checkpoint = self.segment.at_checkpoint.clone();
        let closed_at = checkpoint
            .as_ref()
            .filter(|(c, closing)| *closing && (after_checkpoint || self.chain.as_ref() == Some(c)))
            .map(|(c, _)| c.seq);
        if run.lines == 0 && closed_at.is_some() {
            return Ok(());
        }
        let lines = crate::engine::plural(run.lines as usize, "line", "lines");
        if let Some(seq) = closed_at {
            return Err(at(
                Failure::Inserted,
                format!(
                    "the {lines} before this restart follow the closing checkpoint at seq \
                     {seq}: a closed log gets none"
                ),
            ));
        }
        let torn = o.left_out.as_ref().is_some_and(|l| l.torn);
        if run.lines > 0 {
            let what = if torn && run.lines == 1 {
                "a line cut short (a crash)".to_string()
            } else {
                format!("the {lines} after the last checkpoint")
            };
            self.note(format!(
                "line {}: the restart left out {what}; no checkpoint signs them",
                raw.number
            ));
        }
        // The run before did not close: a crash, or its end cut off.
        let kept_unsigned = if after_checkpoint {
            0
        } else {
            self.v.unsigned_tail
        };
        let what = match &checkpoint {
            None => "the run before this restart has no checkpoint: its lines are signed by no one"
                .to_string(),
            Some((c, _)) if run.lines + kept_unsigned > 0 => format!(
                "the run before this restart did not close: {} after its checkpoint at seq {} \
                 are signed by no one (a crash?)",
                crate::engine::plural((run.lines + kept_unsigned) as usize, "line", "lines"),
                c.seq
            ),
            Some((c, _)) => format!(
                "the run before this restart did not close: it ends at its checkpoint at seq {} \
                 (a crash, or the lines after it cut off)",
                c.seq
            ),
        };
        let kind = if checkpoint.is_some() && run.lines + kept_unsigned == 0 {
            Failure::Truncated
        } else {
            Failure::Unsigned
        };
        self.soft(at(kind, what));
        Ok(())
    }

    /// A file that begins a new chain after the files before it: what a
    /// server does when a crash left its new file without a checkpoint
    /// of its own (or after its key or origin changed), never an attacker
    /// without the key — with a key, the new chain must be signed.
    fn new_file_chain(
        &mut self,
        raw: &Raw,
        at: impl Fn(Failure, String) -> Finding,
    ) -> Result<(), Finding> {
        if let Some((finding, run)) = self.pending.take() {
            // Only a last line cut short by the crash; any other break
            // before the new chain stands.
            if finding.kind != Failure::Truncated || run.lines != 1 {
                return Err(finding);
            }
            self.note(format!(
                "the file before line {} of this one ends inside a line (a crash)",
                raw.number
            ));
        }
        if self.v.closed {
            // Only a new key begins a new chain after a closed one: the
            // writer continues its own closed chain.
            self.new_chain_after_closed = self.last_key.clone();
            self.note("a new chain starts in this file after a closed one (a new key)".into());
            return Ok(());
        }
        let (kind, what) = if self.v.unsigned_tail > 0 {
            (
                Failure::Unsigned,
                format!(
                    "the file before ends without closing: its last {} are signed by no \
                     checkpoint (a crash?)",
                    crate::engine::plural(self.v.unsigned_tail as usize, "line", "lines")
                ),
            )
        } else {
            (
                Failure::Truncated,
                "the file before ends without closing (a crash, or its end cut off)".to_string(),
            )
        };
        self.note(format!(
            "line {}: the server stopped without closing its log and began a new chain here",
            raw.number
        ));
        self.soft(at(kind, what));
        Ok(())
    }

    /// The chain before a new one in the same file ends here: what a
    /// writer without a key does when the file's last line is not sealed.
    /// A signing writer never does (it moves such a file aside), so with
    /// keys it is a finding.
    fn chain_replaced(&mut self, raw: &Raw) -> Result<(), Finding> {
        if !self.opts.keys.is_empty() {
            return Err(Finding {
                kind: Failure::Inserted,
                path: self.current_path(),
                line: raw.number,
                what: "a new chain inside a file: a signing writer never begins one there"
                    .to_string(),
            });
        }
        let lines = crate::engine::plural(self.file_run.lines as usize, "line", "lines");
        self.note(format!(
            "line {}: a new chain starts; the {lines} before it are left out",
            raw.number
        ));
        self.pending = None;
        Ok(())
    }

    pub(super) fn soft(&mut self, finding: Finding) {
        if self.soft.is_none() {
            self.soft = Some(finding);
        }
    }

    fn current_path(&self) -> std::path::PathBuf {
        self.v
            .files
            .last()
            .map(|f| f.path.clone())
            .unwrap_or_default()
    }

    /// The end of the walk: what is still unaccounted for, the log's end,
    /// the lines it must still hold.
    pub(super) fn end(&mut self, last_line: u64) {
        let path = self.current_path();
        let here = |kind, what: String| Finding {
            kind,
            path: path.clone(),
            line: last_line,
            what,
        };
        let keys = !self.opts.keys.is_empty();
        if let Some((finding, run)) = self.pending.take() {
            let cut_end = finding.kind == Failure::Truncated && run.lines == 1;
            if !(cut_end && self.opts.allow_open_end) {
                self.v.failure = Some(finding);
                return;
            }
            self.note("the file ends inside a line: the server is writing it, or stopped".into());
        }
        if let Some((want, _)) = self.expected.iter().find(|(_, seen)| !seen) {
            self.v.failure = Some(here(
                Failure::Truncated,
                format!(
                    "seq {} with hash {} is not in the log: the log held it when that \
                     checkpoint was kept, so lines up to it were removed",
                    want.seq, want.head
                ),
            ));
            return;
        }
        if !keys {
            if let Some(soft) = self.soft.take() {
                self.note(soft.to_string());
            }
            return;
        }
        if self.v.checkpoints == 0 {
            self.v.failure = Some(here(
                Failure::Unsigned,
                "the log has no checkpoint to verify with the given key".into(),
            ));
            return;
        }
        if let Some(soft) = self.soft.take() {
            if !self.opts.allow_open_end {
                self.v.failure = Some(soft);
                return;
            }
            self.note(soft.to_string());
        }
        if self.v.closed && self.v.unsigned_tail == 0 {
            return;
        }
        let since = match &self.v.last_checkpoint {
            Some((time, every)) => {
                format!("its last checkpoint is of {time} (the next was due within {every} s)")
            }
            None => String::new(),
        };
        let (kind, what) = if self.v.unsigned_tail > 0 {
            (
                Failure::Unsigned,
                format!(
                    "the last {} are signed by no checkpoint, and the log ends without its \
                     closing checkpoint; {since}",
                    crate::engine::plural(self.v.unsigned_tail as usize, "line", "lines")
                ),
            )
        } else {
            (
                Failure::Truncated,
                format!(
                    "the log ends without its closing checkpoint: lines after it may be cut \
                     off, or its server still runs or stopped without closing; {since}"
                ),
            )
        };
        if self.opts.allow_open_end {
            self.note(format!("open end: {what}"));
        } else {
            self.v.failure = Some(here(kind, what));
        }
    }
}
