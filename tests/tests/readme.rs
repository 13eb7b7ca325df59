//! The README's grpcurl session is real: each command is run against the
//! real server and must print exactly what the README shows.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed setup must fail the test"
)]

use purposegate_tests::{ServerProcess, grpcurl, repo_root};

/// The `$ grpcurl ...` commands of the README's console blocks, each with
/// the output shown under it.
fn sessions(readme: &str) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut in_console = false;
    let mut lines = readme.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("```console") {
            in_console = true;
            continue;
        }
        if line.starts_with("```") {
            in_console = false;
            continue;
        }
        if !in_console || !line.starts_with("$ grpcurl ") {
            continue;
        }
        let mut command = line.trim_start_matches("$ ").to_string();
        while command.ends_with('\\') {
            command.pop();
            command.push_str(lines.next().unwrap().trim());
            command.push(' ');
        }
        let mut expected = String::new();
        while let Some(next) = lines.peek() {
            if next.is_empty() || next.starts_with("```") || next.starts_with("$ ") {
                break;
            }
            expected.push_str(lines.next().unwrap());
            expected.push('\n');
        }
        out.push((shell_words(&command), expected));
    }
    out
}

/// Splits a command line with single-quoted arguments.
fn shell_words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in command.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

#[test]
fn the_readme_grpcurl_session_prints_what_the_readme_shows() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let sessions = sessions(&readme);
    assert!(sessions.len() >= 3, "the README shows a grpcurl session");
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let addr = server.addr.to_string();
    for (words, expected) in sessions {
        let args: Vec<&str> = words
            .iter()
            .skip(1)
            .map(|w| {
                if w == "localhost:50051" {
                    addr.as_str()
                } else {
                    w.as_str()
                }
            })
            .collect();
        let run = grpcurl(&args, None);
        let got = format!("{}{}", run.stdout, run.stderr);
        assert_eq!(
            got.trim_end(),
            expected.trim_end(),
            "`{}` prints something else than the README shows",
            words.join(" ")
        );
    }
}
