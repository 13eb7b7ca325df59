//! The README's grpcurl session is real: each command is run against the
//! real server and must print exactly what the README shows.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers: a failed setup must fail the test"
)]

use purposegate_tests::{DemoService, ServerProcess, SidecarProcess, grpcurl, repo_root};

/// The `$ grpcurl ...` commands of the README's console blocks tagged
/// `tag` (```` ```console ```` is the server's session, ```` ```console sidecar ````
/// the sidecar walkthrough), each with the output shown under it.
fn sessions(readme: &str, tag: &str) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut in_console = false;
    let mut lines = readme.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            in_console = info.trim() == tag;
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

/// Runs each command of `sessions` with the README's addresses replaced by
/// the test's, and compares what it prints.
fn replay(sessions: Vec<(Vec<String>, String)>, addresses: &[(&str, String)]) {
    for (words, expected) in sessions {
        let args: Vec<&str> = words
            .iter()
            .skip(1)
            .map(|w| {
                addresses
                    .iter()
                    .find(|(readme, _)| w == readme)
                    .map_or(w.as_str(), |(_, real)| real.as_str())
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

#[test]
fn the_readme_grpcurl_session_prints_what_the_readme_shows() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let sessions = sessions(&readme, "console");
    assert!(sessions.len() >= 3, "the README shows a grpcurl session");
    let server = ServerProcess::start(&["--decision-log", "off"]);
    replay(sessions, &[("localhost:50051", server.addr.to_string())]);
}

#[test]
fn the_readme_sidecar_walkthrough_prints_what_the_readme_shows() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let sessions = sessions(&readme, "console sidecar");
    assert!(
        sessions.len() >= 2,
        "the README shows a permitted and a denied call"
    );
    let server = ServerProcess::start(&["--decision-log", "off"]);
    let demo = DemoService::start();
    let upstream = format!("http://{}", demo.grpc_addr);
    let sidecar = SidecarProcess::start(
        &server.url(),
        &[
            "--upstream",
            &upstream,
            "--routes",
            "examples/customer-service/routes.yaml",
        ],
        &[],
    );
    replay(
        sessions,
        &[
            ("localhost:15001", sidecar.proxy_addr.to_string()),
            ("localhost:15002", sidecar.local_addr.to_string()),
        ],
    );
    assert_eq!(
        demo.received(),
        1,
        "only the permitted call reached the app"
    );
}
