//! What the README and `docs/` show, read back so a test can run it.
//!
//! A document's fenced blocks are of three kinds:
//!
//! - a block whose info string holds `file=NAME` (```` ```yaml file=policy.yaml ````)
//!   is a file the reader is asked to write: it is written, in document order,
//!   into the directory the document's `console cli` commands run in;
//! - ```` ```console KIND ```` is a session: each `$ command` line (with `\`
//!   continuations) is followed by what it prints, up to the next `$` line
//!   or the end of the block. KIND says what the commands run against:
//!   `cli` (the binaries, in the document's directory), `server` (a running
//!   decision server on its default policy), `sidecar` (a server, the demo
//!   app and a sidecar in front of it, as the walkthrough starts them) or
//!   `logged` (a server on the directory's `policy.yaml` writing its
//!   decision log to `decisions.log` there, commands run in the directory)
//!   or `chain` (a server signing purpose contexts and two demo apps behind
//!   their sidecars, the first relaying to the second, as README's
//!   "Purpose across services" starts them);
//! - anything else is shown, not run, and may not look like a session.
//!
//! In a shown output, a line `...` stands for any number of lines.

use std::path::Path;

/// One fenced block of a document.
#[derive(Debug, Clone)]
pub struct Block {
    /// `FILE:LINE` of the opening fence.
    pub place: String,
    /// The words after the opening fence.
    pub info: String,
    pub text: String,
    /// The block's lines in its document: `lines` is the index of its
    /// first line after the opening fence, up to the closing one.
    pub lines: std::ops::Range<usize>,
}

impl Block {
    /// The `NAME` of `file=NAME` in the info string.
    pub fn file_name(&self) -> Option<&str> {
        self.info
            .split_whitespace()
            .find_map(|w| w.strip_prefix("file="))
    }

    /// The `KIND` of ```` ```console KIND ````.
    pub fn console(&self) -> Option<&str> {
        let mut words = self.info.split_whitespace();
        (words.next() == Some("console")).then(|| words.next().unwrap_or(""))
    }

    /// The commands of a session and what each prints.
    pub fn commands(&self) -> Vec<Shown> {
        let mut out: Vec<Shown> = Vec::new();
        let mut lines = self.text.lines();
        while let Some(line) = lines.next() {
            if let Some(first) = line.strip_prefix("$ ") {
                let mut command = first.to_string();
                // The shell reads `\` at a line's end as a continuation.
                while command.ends_with('\\') {
                    command.push('\n');
                    command.push_str(lines.next().unwrap_or(""));
                }
                out.push(Shown {
                    command,
                    output: String::new(),
                });
            } else if let Some(last) = out.last_mut() {
                last.output.push_str(line);
                last.output.push('\n');
            } else {
                panic!(
                    "{}: a session must start with a `$ ` command, not {line:?}",
                    self.place
                );
            }
        }
        out
    }
}

/// A command of a session and the output shown under it.
#[derive(Debug, Clone)]
pub struct Shown {
    pub command: String,
    pub output: String,
}

/// The fenced blocks of the markdown file at `path`, named as `shown_as`.
pub fn blocks(path: &Path, shown_as: &str) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    place: format!("{shown_as}:{}", i + 1),
                    info: info.trim().to_string(),
                    text: String::new(),
                    lines: i + 1..i + 1,
                });
            }
            (Some(block), Some(rest)) if rest.trim().is_empty() => {
                block.lines.end = i;
                out.extend(open.take());
            }
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{shown_as}: a code block is never closed");
    out
}

/// A session's text, each command followed by its output, for a document
/// being updated to what the binaries print.
pub fn session_text(commands: &[Shown]) -> String {
    commands
        .iter()
        .map(|c| match c.output.trim_end() {
            "" => format!("$ {}\n", c.command),
            output => format!("$ {}\n{output}\n", c.command),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `got` is what `shown` shows, a `...` line in `shown` standing
/// for any number of lines.
pub fn matches(shown: &str, got: &str) -> bool {
    fn from(shown: &[&str], got: &[&str]) -> bool {
        match shown.split_first() {
            None => got.is_empty(),
            Some((&"...", rest)) => {
                (0..=got.len()).any(|skip| got.get(skip..).is_some_and(|g| from(rest, g)))
            }
            Some((line, rest)) => got
                .split_first()
                .is_some_and(|(g, got_rest)| g == line && from(rest, got_rest)),
        }
    }
    let shown: Vec<&str> = shown.trim_end().lines().map(str::trim_end).collect();
    let got: Vec<&str> = got.trim_end().lines().map(str::trim_end).collect();
    from(&shown, &got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ellipsis_line_stands_for_any_lines() {
        assert!(matches("a\n...\nd\n", "a\nb\nc\nd"));
        assert!(matches("a\n...\nd", "a\nd"));
        assert!(!matches("a\n...\nd", "a\nb"));
        assert!(!matches("a\nb", "a\nb\nc"));
        assert!(matches("a  \nb\n\n", "a\nb"));
    }

    #[test]
    fn sessions_keep_continuations_and_blank_lines_of_output() {
        let block = Block {
            place: "x.md:1".into(),
            info: "console cli".into(),
            text: "$ a \\\n  b\none\n\ntwo\n$ c\n".into(),
            lines: 1..6,
        };
        let commands = block.commands();
        assert_eq!(commands.len(), 2);
        assert_eq!(commands[0].command, "a \\\n  b");
        assert_eq!(commands[0].output, "one\n\ntwo\n");
        assert_eq!(commands[1].output, "");
        assert_eq!(block.console(), Some("cli"));
    }
}
